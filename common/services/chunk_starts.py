"""Start one template for a fan-out chunk's tenants in a bounded number of statements, not a few per tenant.

The same decisions as `pipelines.start_run` makes for one API trigger, taken for the whole chunk at once:
the template is loaded once and resolved per tenant (in memory); quotas are admitted for all tenants
(`quotas.admit_runs`); one read (`run_batches.matching_runs`) finds, for every tenant, the run an earlier
delivery started under the chunk's idempotency key and any identical run in flight; the PENDING records
are written together (`run_batches.write_records`). Per tenant, in `start_run`'s order: an idempotency
replay answers the earlier run (422 when it was another request), an identical run in flight is the 409,
a quota refusal the 429; a refused tenant writes nothing.

A replayed run is answered from its latest record, its steps as this delivery's resolution plans them (the
snapshot and the step records are not read): the caller enqueues step 0 only for runs it started itself.

What a chunk costs: three statements for up to 100 tenants, and for 500 one read of standings, one read of
runs and five write transactions (BigQuery: one script job each), whatever the number of tenants. The chunk
does not take each tenant's `start/` and `idempotency/` claims (`pipelines.start_run` does, for an API
trigger): the chunk as a whole is started under its own claim (`fanout.start_chunk`), and its
redeliveries find its runs by its idempotency key. As with its quota reads, an API trigger of the very same
pipeline admitted in the moment between the chunk's read and its write could start an identical run beside
the chunk's (documented in docs/scaling.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from common.contracts.pipelines import Run
from common.errors import BadRequest, Conflict, ConvergenceError, ValidationFailed
from common.metadata import run_batches
from common.metadata.runs import ACTIVE_RUN_STATUSES, RunRecord, new_run_id, pending_record
from common.runtime import Runtime
from common.services import quotas
from common.services.pipelines import IDEMPOTENCY_KEY_RE, fingerprint
from common.services.runs import run_view
from common.templates import ResolvedPipeline, load_template, resolve_template


@dataclass
class StartOutcome:
    """What `start_runs` did for one tenant: a run (new, or `replayed` from an earlier delivery) or an error."""

    run: Run | None
    replayed: bool = False
    error: ConvergenceError | None = None


@dataclass
class _Planned:
    """A tenant reached before the time budget ran out: its admission and, when admitted, its resolved run."""

    admission: quotas.Admission
    pipeline: ResolvedPipeline | None = None
    fingerprint: str | None = None


def start_runs(
    rt: Runtime,
    tenant_ids: Sequence[str],
    provider: str,
    domain: str,
    template_name: str,
    body: dict[str, Any],
    *,
    trigger_type: str = "bulk",
    idempotency_key: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    bulk_id: str | None = None,
) -> dict[str, StartOutcome]:
    """Start one template for many tenants (PENDING, nothing published: the caller batches step 0).

    Answers {tenant: outcome} for every tenant reached before `should_stop()` turned true (the rest are
    left out, for the caller to hand on: an admission spends nothing until its run record exists, so they
    used no quota). A tenant refused by its plan gets the 429 as its error, unless the idempotency key
    finds the run an earlier delivery of the same request started, answered as replayed. An unknown
    template raises NotFound before anything. Runs of a bulk run carry its `bulk_id`.
    """
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise BadRequest(
            "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ . : -", code="invalid_header"
        )
    template = load_template(provider, domain, template_name)
    admissions = quotas.admit_runs(rt, tenant_ids, quotas.template_key(provider, domain, template_name))
    outcomes: dict[str, StartOutcome] = {}
    planned: dict[str, _Planned] = {}
    for tenant, admission in admissions.items():
        if should_stop is not None and should_stop():
            break
        plan = planned[tenant] = _Planned(admission)
        try:
            plan.pipeline = resolve_template(
                template, tenant_id=tenant, provider=provider, domain=domain, template_name=template_name,
                run_id=new_run_id(), request=dict(body),
            )  # fmt: skip
        except ConvergenceError as exc:
            if admission.admitted:  # a refused tenant answers with its 429 (or an earlier run), as before
                del planned[tenant]
                outcomes[tenant] = StartOutcome(None, error=exc)
            continue
        if admission.admitted:  # a refused tenant is looked up by the idempotency key alone
            plan.fingerprint = fingerprint(plan.pipeline.pipeline_id, plan.pipeline.parameters)
    try:
        found = run_batches.matching_runs(
            rt.warehouse, {t: p.fingerprint for t, p in planned.items()}, idempotency_key=idempotency_key
        )
    except ConvergenceError as exc:
        return outcomes | {tenant: StartOutcome(None, error=exc) for tenant in planned}
    replays: dict[str, RunRecord] = {}
    new: dict[str, RunRecord] = {}
    for tenant, plan in planned.items():
        decided = _decide(plan, found.get(tenant, []), idempotency_key)
        if isinstance(decided, StartOutcome):
            outcomes[tenant] = decided
        elif decided is not None:
            replays[tenant] = decided
        else:
            assert plan.pipeline is not None and plan.fingerprint is not None
            new[tenant] = pending_record(
                plan.pipeline, run_id=plan.pipeline.variables["run_id"], trigger_type=trigger_type,
                trigger_by=plan.pipeline.parameters["trigger_by"], fingerprint=plan.fingerprint,
                idempotency_key=idempotency_key, bulk_id=bulk_id,
            )  # fmt: skip
    outcomes |= {
        tenant: StartOutcome(run_view(record, {}, planned[tenant].pipeline), replayed=True)
        for tenant, record in replays.items()
    }
    if new:
        try:
            run_batches.write_records(rt.warehouse, list(new.values()))
        except ConvergenceError as exc:
            outcomes |= {tenant: StartOutcome(None, error=exc) for tenant in new}
        else:
            outcomes |= {
                tenant: StartOutcome(run_view(record, {}, planned[tenant].pipeline))
                for tenant, record in new.items()
            }
    return {tenant: outcomes[tenant] for tenant in admissions if tenant in outcomes}


def _decide(
    plan: _Planned, runs: list[RunRecord], idempotency_key: str | None
) -> StartOutcome | RunRecord | None:
    """A tenant's answer: an outcome (refused, in flight), the earlier run to replay, or None to start one."""
    if idempotency_key is not None:
        earlier = next((r for r in runs if r.idempotency_key == idempotency_key), None)
        if earlier is not None:
            if plan.admission.admitted and earlier.request_fingerprint != plan.fingerprint:
                error = ValidationFailed(
                    "this Idempotency-Key was used for a different request", code="idempotency_key_reused"
                )
                return StartOutcome(None, error=error)
            return earlier
    if not plan.admission.admitted:
        return StartOutcome(None, error=plan.admission.refusal)
    active = next(
        (r for r in runs if r.request_fingerprint == plan.fingerprint and r.status in ACTIVE_RUN_STATUSES),
        None,
    )
    if active is not None:
        conflict = Conflict(
            "an identical run is already in flight", code="run_in_flight",
            pipeline_logging_id=active.pipeline_logging_id,
        )  # fmt: skip
        return StartOutcome(None, error=conflict)
    return None
