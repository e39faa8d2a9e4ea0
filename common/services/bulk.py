"""Bulk runs: an operator starts one template for many tenants, then reads where it stands.

**Starting** (`start_bulk`, POST /api/v1/admin/runs/bulk). Everything is checked before anything is recorded
or published: the template exists and the parameters resolve against it (400 naming the bad one), the
platform is bootstrapped, and for a tenant list every tenant is active (400 naming those that are not).
`date` is pinned to one UTC day (`yesterday` becomes that date), so a bulk that starts around midnight still
covers one day for everyone. Then one row goes into `bulk_runs` and the tenants are published as schedules
messages of FANOUT_CHUNK_SIZE tenants each, in one batch, each carrying the bulk_id with trigger_type
`bulk`. The trigger function starts each chunk (`common.services.fanout.start_chunk`): a tenant that cannot
run the template (`common.services.readiness`) is skipped with the reason, a listed tenant too (an operator
who names tenants wants to hear which cannot run the template, not collect failing runs), and every other
tenant gets a run that carries the bulk_id and is keyed by it, so a redelivered chunk never starts a
tenant's run twice while a second identical request, being another bulk, gets runs of its own. An
`Idempotency-Key` names the bulk: repeating the request with it (say after a 503) publishes the same bulk
again, which starts only what is missing.

**Status** (`bulk_status`, GET /api/v1/admin/runs/bulk/{bulk_id}), and why it is read this way. A run's status
lives in its tenant's `pipeline_runs`; asking each tenant's dataset would be one query per tenant, 10,000
for a bulk of 10,000. Instead:

1. each fan-out chunk records what it knows of each of its tenants in `bulk_run_tenants`, in one statement
   per chunk: the run it started, or that the tenant was skipped and why, or refused and why. A status read
   takes every tenant's best record in one query on the control dataset;
2. only the runs not yet seen final are read from their tenants' `pipeline_runs`, with one UNION ALL query per
   500 tenants (`common.metadata.runs.latest_statuses`), pruned to the day partitions since the bulk began;
3. a run seen COMPLETE or FAILED is recorded back into `bulk_run_tenants` (one statement per read), so no
   later read looks at its tenant's table again. Once a bulk is done, reading it is two queries on the control
   dataset, whatever its size.

On BigQuery a read while N tenants' runs are unfinished costs ceil(N / 500) queries, each billing at least
10 MB per table it names; a finished bulk costs none of those. The alternative, the step executor writing
each run's end into the control dataset, would be exact without any of these reads, but it puts a control
dataset write on the path of every run (bulk or not) for the sake of the few reads an operator makes.
Tenants whose chunk has not been processed yet count as PENDING.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from common.bus.messages import ScheduleMessage
from common.contracts.bulk import MAX_LISTED, BulkRunRequest
from common.errors import (
    BadRequest,
    Conflict,
    ConvergenceError,
    DependencyUnavailable,
    NotFound,
    ValidationFailed,
)
from common.metadata import bulk_runs, organizations, runs
from common.metadata.control_dataset import is_bootstrapped
from common.runtime import Runtime
from common.services import fanout
from common.services.pipelines import IDEMPOTENCY_KEY_RE
from common.templates import load_template, resolve_template
from common.templates.resolver import InvalidParameter
from common.types import iso_utc, utcnow

log = logging.getLogger(__name__)

BULK_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Bulk ids named by an Idempotency-Key: uuid5 of the key in this namespace.
KEYED_BULKS = uuid.UUID("6f1d7e1e-8a86-4d0c-9d1f-2b4f5f0c6a3e")
COUNTED = ("PENDING", "RUNNING", "COMPLETE", "FAILED", "SKIPPED")
ACTIVE = ("PENDING", "RUNNING")
# Records are read from the day partitions since the bulk began, less this (clocks of instances differ).
CLOCK_MARGIN = dt.timedelta(minutes=10)


def checked_parameters(template: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters every run of the bulk gets, `date` pinned to a day; 400 naming what is wrong."""
    provider, domain, name = template.split("/")
    try:
        loaded = load_template(provider, domain, name)
    except NotFound:
        raise BadRequest(f"no runnable template {template}", code="template_not_found") from None
    if "trigger_by" in parameters:
        raise InvalidParameter("trigger_by is a field of the bulk request, not a run parameter")
    resolved = resolve_template(
        loaded, tenant_id="bulk_check", provider=provider, domain=domain, template_name=name,
        run_id="bulk-validation", request=parameters,
    )  # fmt: skip
    return dict(parameters) | {"date": resolved.parameters["date"]}


def _fingerprint(request: BulkRunRequest) -> str:
    material = [request.template, request.tenants, request.parameters, request.trigger_by]
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _listed_tenants(rt: Runtime, tenants: Literal["*"] | Sequence[str], *, check: bool) -> list[str]:
    """The tenants of a bulk, sorted: every active one for "*"; with `check`, listed ones must be active."""
    if tenants == "*":
        return organizations.active_org_slugs(rt)
    wanted = sorted(set(tenants))
    if check and wanted:
        active = set(organizations.active_org_slugs(rt, wanted))
        missing = [t for t in wanted if t not in active]
        if missing:
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
            raise BadRequest(f"not active tenants: {shown}", code="unknown_tenant", tenants=missing[:100])
    return wanted


def start_bulk(rt: Runtime, request: BulkRunRequest, *, idempotency_key: str | None = None) -> dict[str, Any]:
    """Check, record and publish a bulk run; the answer of POST /api/v1/admin/runs/bulk."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise BadRequest(
            "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ . : -", code="invalid_header"
        )
    parameters = checked_parameters(request.template, request.parameters)
    if not is_bootstrapped(rt):
        raise Conflict(
            "the control dataset is not bootstrapped; POST /api/v1/admin/bootstrap first",
            code="not_bootstrapped",
        )
    fingerprint = _fingerprint(request)
    bulk_id = str(uuid.uuid5(KEYED_BULKS, idempotency_key) if idempotency_key else uuid.uuid4())
    if idempotency_key and (earlier := bulk_runs.get_bulk(rt, bulk_id)) is not None:
        if earlier["request_fingerprint"] != fingerprint:
            raise ValidationFailed(
                "this Idempotency-Key was used for a different bulk request", code="idempotency_key_reused"
            )
        tenants = _listed_tenants(rt, earlier["tenants"], check=False)
        _publish(rt, earlier, tenants)
        log.info("bulk run %s published again (Idempotency-Key replay)", bulk_id)
        return _accepted(earlier, replayed=True)
    tenants = _listed_tenants(rt, request.tenants, check=True)
    size = rt.settings.fanout_chunk_size
    bulk = {
        "bulk_id": bulk_id, "template": request.template, "tenants": request.tenants,
        "parameters": parameters, "trigger_by": request.trigger_by or f"bulk:{bulk_id}",
        "tenant_count": len(tenants), "chunk_count": -(-len(tenants) // size),
        "request_fingerprint": fingerprint, "idempotency_key": idempotency_key, "created_at": utcnow(),
    }  # fmt: skip
    bulk_runs.insert_bulk(rt, bulk)
    _publish(rt, bulk, tenants)
    log.info("bulk run %s of %s: %d tenants in %d chunks", bulk_id, request.template, len(tenants),
             bulk["chunk_count"])  # fmt: skip
    return _accepted(bulk, replayed=False)


def _accepted(bulk: dict[str, Any], *, replayed: bool) -> dict[str, Any]:
    return {
        "bulk_id": bulk["bulk_id"], "template": bulk["template"], "tenants": bulk["tenant_count"],
        "chunks": bulk["chunk_count"], "parameters": bulk["parameters"], "replayed": replayed,
    }  # fmt: skip


def _publish(rt: Runtime, bulk: dict[str, Any], tenants: list[str]) -> None:
    """One schedules message per FANOUT_CHUNK_SIZE tenants, in one batch."""
    messages = [
        ScheduleMessage(
            template=bulk["template"],
            tenants=part,
            parameters=bulk["parameters"],
            trigger_by=bulk["trigger_by"],
            trigger_type="bulk",
            bulk_id=bulk["bulk_id"],
            chunk=index,
            only_ready=True,
        )
        for index, part in enumerate(fanout.chunks(tenants, rt.settings.fanout_chunk_size))
    ]
    if not messages:
        return
    try:
        rt.bus.publish_many(rt.settings.schedules_topic, messages)
    except ConvergenceError as exc:
        raise DependencyUnavailable(
            f"bulk run {bulk['bulk_id']} is recorded but its {len(messages)} messages were not all published"
            f" ({exc.message}); repeat the request with the same Idempotency-Key to finish it",
            bulk_id=bulk["bulk_id"],
        ) from None


def bulk_status(rt: Runtime, bulk_id: str) -> dict[str, Any]:
    """Where a bulk run stands: its tenants counted by status, its failures and skipped tenants (the first
    MAX_LISTED of each, by tenant id). A run seen ending is recorded so that it is not read again."""
    bulk = bulk_runs.get_bulk(rt, bulk_id) if BULK_ID_RE.fullmatch(bulk_id or "") else None
    if bulk is None:
        raise NotFound("no such bulk run", code="bulk_not_found")
    since = bulk["created_at"] - CLOCK_MARGIN
    outcomes = bulk_runs.tenant_outcomes(rt, bulk_id, since=since)
    waiting: dict[str, list[str]] = {}
    for row in outcomes:
        if row["pipeline_logging_id"] and row["status"] in ACTIVE:
            waiting.setdefault(row["tenant_id"], []).append(row["pipeline_logging_id"])
    seen = _run_statuses(rt, waiting, since)
    ended = []
    for row in outcomes:
        latest = seen.get(row["pipeline_logging_id"]) if row["tenant_id"] in waiting else None
        if latest is None:
            continue
        row["status"] = latest["status"]
        if latest["status"] in runs.FINAL_RUN_STATUSES:
            row["error_message"] = latest["error_message"]
            ended.append(row | {"outcome": "finished"})
    try:
        bulk_runs.record_outcomes(rt, bulk_id, ended)
    except ConvergenceError as exc:  # the answer stands; a later read records these ends
        log.warning("bulk %s: the ends of %d runs not recorded: %s", bulk_id, len(ended), exc.message)
    counts = dict.fromkeys(COUNTED, 0)
    for row in outcomes:
        counts[row["status"] if row["status"] in counts else "PENDING"] += 1
    counts["PENDING"] += max(0, bulk["tenant_count"] - len(outcomes))
    failed = [row for row in outcomes if row["status"] == "FAILED"]
    skipped = [row for row in outcomes if row["status"] == "SKIPPED"]
    return {
        "bulk_id": bulk_id, "template": bulk["template"], "parameters": bulk["parameters"],
        "trigger_by": bulk["trigger_by"], "created_at": iso_utc(bulk["created_at"]),
        "tenants": bulk["tenant_count"], "chunks": bulk["chunk_count"], "counts": counts,
        "done": counts["PENDING"] == counts["RUNNING"] == 0,
        "failures": [{"tenant_id": r["tenant_id"], "pipeline_logging_id": r["pipeline_logging_id"],
                      "error_message": r["error_message"]} for r in failed[:MAX_LISTED]],
        "skipped": [{"tenant_id": r["tenant_id"], "reason": r["error_message"]}
                    for r in skipped[:MAX_LISTED]],
    }  # fmt: skip


def _run_statuses(
    rt: Runtime, waiting: dict[str, list[str]], since: dt.datetime
) -> dict[str, dict[str, Any]]:
    """run id → latest status of the waiting runs, a batch of tenants per query; a tenant whose records are
    gone (its dataset dropped) is left out instead of failing the read."""
    tenants = list(waiting)
    seen: dict[str, dict[str, Any]] = {}
    for first in range(0, len(tenants), runs.STATUS_QUERY_TENANTS):
        batch = {tenant: waiting[tenant] for tenant in tenants[first : first + runs.STATUS_QUERY_TENANTS]}
        try:
            seen |= runs.latest_statuses(rt.warehouse, batch, since=since)
        except ConvergenceError as exc:
            if exc.status != 404:
                raise
            for tenant, run_ids in batch.items():
                try:
                    seen |= runs.latest_statuses(rt.warehouse, {tenant: run_ids}, since=since)
                except ConvergenceError as missing:
                    if missing.status != 404:
                        raise
                    log.warning("bulk status: the runs of %s cannot be read: %s", tenant, missing.message)
    return seen
