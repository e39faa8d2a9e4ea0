"""Subscription quotas, enforced when a run starts: runs per UTC day, concurrent runs, templates.

Limits come from `org_subscriptions` (copied from configs/plans.yml at onboarding; an operator may change a
row). What an organisation used is read from its own `pipeline_runs` (`common.metadata.usage`): a run's
first record is written when it is admitted and a refused run writes none, so there is no counter to keep.

- **max_runs_per_day**: runs admitted per organisation and UTC day, whatever started them (api, schedule,
  bulk). The run that would exceed it is refused with 429 `quota_exceeded` and Retry-After = seconds until
  the next UTC midnight. A run counts once admitted, even if it then fails (also when the bus refused its
  first step: the platform's fault, rare, and visible as a FAILED run).
- **max_concurrent_runs**: runs of the organisation whose latest record is PENDING or RUNNING (and that
  started within ACTIVE_RUN_HORIZON, so a run abandoned without a final record cannot hold a slot for
  ever). Above it: 429 `too_many_concurrent_runs`, Retry-After 30 s.
- **max_templates**: read as the number of *distinct templates* (`provider/domain/template`) the
  organisation may use at all — every template it has ever run counts, on any day. Running one of those
  again is always allowed; a new one above the limit is refused with 429 `quota_exceeded`. Waiting does not
  lift this limit (a plan change does), so its Retry-After is a full day: a hint not to retry soon.

Atomicity. A single trigger (`reserved_run`) holds the organisation's `quota/<org>` claim
(`common.claims`, atomic across instances) from the read of its standing until its run record is written,
so one organisation's concurrent triggers are admitted one after another on any number of instances: the
limits are exact for them. A fan-out chunk (`admit_runs`) reads the standing of up to 500 organisations in
one query without claiming each: should an API trigger of one of them be admitted between that read and
the chunk's run record (a second or so), the organisation may exceed a limit by one run, and by at most
one per chunk of a slot (a tenant is in one chunk of a slot). Nothing here writes to a table shared by
all tenants, so admission is not bounded by BigQuery's DML concurrency on one table.

Cost. One read for any number of organisations up to 500 (repeated per 500 beyond); a single trigger costs
that one read plus the claim's two Cloud Storage writes.

The statements themselves belong to the repositories of the tables (`common.metadata.usage`,
`common.metadata.subscriptions`); this module decides what is admitted, what a refusal says and its Retry-After.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from common.errors import RateLimited
from common.metadata import usage
from common.metadata.runs import IN_FLIGHT_HORIZON
from common.metadata.subscriptions import PlanLimits, plans
from common.runtime import Runtime
from common.tenancy import validate_tenant_id
from common.types import utcnow

DEFAULT_PLAN = "starter"
CONCURRENCY_RETRY_AFTER = 30
TEMPLATES_RETRY_AFTER = 86_400
ACTIVE_RUN_HORIZON = IN_FLIGHT_HORIZON
# The read joins each tenant's pipeline_runs; BigQuery allows 1,000 tables in one query.
MAX_TENANTS_PER_ADMISSION = 500
QUOTA_LEASE = 60.0  # seconds: the read of a standing and the run record take well under one


class QuotaExceeded(RateLimited):
    """A plan limit on runs per day or templates is reached."""

    code = "quota_exceeded"


class TooManyConcurrentRuns(RateLimited):
    """The plan's number of runs in flight is reached."""

    code = "too_many_concurrent_runs"


@dataclass
class Admission:
    """The answer for one organisation: admitted (a reserved slot) or refused (with the 429 to raise)."""

    tenant_id: str
    template: str
    day: dt.date
    admitted: bool
    refusal: RateLimited | None = None

    def raise_if_refused(self) -> None:
        if self.refusal is not None:
            raise self.refusal


@dataclass
class _Standing:
    """What the read tells about one organisation."""

    tenant_id: str
    plan: str
    max_runs: int
    max_concurrent: int
    max_templates: int
    runs_today: int = 0
    templates: list[str] = field(default_factory=list)
    active: int = 0


def template_key(provider: str, domain: str, template: str) -> str:
    """How a template is counted: `provider/domain/template` (the same for every tenant)."""
    return f"{provider}/{domain}/{template}"


def seconds_until_midnight(now: dt.datetime) -> int:
    """Whole seconds until the next UTC midnight, at least 1."""
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return max(1, math.ceil((midnight - now).total_seconds()))


def _default_limits() -> PlanLimits:
    """The limits of an organisation without a subscription row."""
    return plans()[DEFAULT_PLAN]


def _read_standings(rt: Runtime, tenants: list[str], day: dt.date, now: dt.datetime) -> dict[str, _Standing]:
    """Limits, counters and active runs of every organisation, in one query."""
    rows = usage.read_standings(rt, tenants, day=day, since=now - ACTIVE_RUN_HORIZON)
    defaults = _default_limits()
    standings: dict[str, _Standing] = {}
    for row in rows:
        tenant = row["org_slug"]
        has_plan = row["plan"] is not None
        standings[tenant] = _Standing(
            tenant_id=tenant,
            plan=row["plan"] if has_plan else DEFAULT_PLAN,
            max_runs=int(row["max_runs_per_day"] if has_plan else defaults["max_runs_per_day"]),
            max_concurrent=int(row["max_concurrent_runs"] if has_plan else defaults["max_concurrent_runs"]),
            max_templates=int(row["max_templates"] if has_plan else defaults["max_templates"]),
            runs_today=int(row["runs_today"] or 0),
            templates=list(row["templates_used"] or []),
            active=int(row["active"] or 0),
        )
    return standings


def _refusal(standing: _Standing, template: str, now: dt.datetime) -> RateLimited | None:
    """Why this organisation may not start a run of `template` now, or None."""
    s = standing
    if s.runs_today >= s.max_runs:
        return QuotaExceeded(
            f"{s.plan} plan allows {s.max_runs} runs per day; {s.runs_today} started today",
            limit="max_runs_per_day", limit_value=s.max_runs, used=s.runs_today, plan=s.plan,
            retry_after=seconds_until_midnight(now),
        )  # fmt: skip
    if template not in s.templates and len(s.templates) >= s.max_templates:
        return QuotaExceeded(
            f"{s.plan} plan allows {s.max_templates} templates; {len(s.templates)} already run,"
            f" and {template} would be another",
            limit="max_templates", limit_value=s.max_templates, used=len(s.templates), plan=s.plan,
            retry_after=TEMPLATES_RETRY_AFTER,
        )  # fmt: skip
    if s.active >= s.max_concurrent:
        return TooManyConcurrentRuns(
            f"{s.plan} plan allows {s.max_concurrent} concurrent runs; {s.active} are pending or running",
            limit="max_concurrent_runs", limit_value=s.max_concurrent, used=s.active, plan=s.plan,
            retry_after=CONCURRENCY_RETRY_AFTER,
        )  # fmt: skip
    return None


def admit_runs(
    rt: Runtime, tenant_ids: Sequence[str], template: str, *, now: dt.datetime | None = None
) -> dict[str, Admission]:
    """Whether each organisation may start one run of `template` now, in one query per 500 organisations.

    Returns {tenant_id: Admission} for every distinct id given. Nothing is written: the run record an
    admitted organisation's run then gets is what counts it (see the module's note on atomicity).
    """
    now = now or utcnow()
    day = now.date()
    tenants = [validate_tenant_id(t, field="tenant_id") for t in dict.fromkeys(tenant_ids)]
    result: dict[str, Admission] = {}
    for start in range(0, len(tenants), MAX_TENANTS_PER_ADMISSION):
        part = tenants[start : start + MAX_TENANTS_PER_ADMISSION]
        standings = _read_standings(rt, part, day, now)
        for tenant in part:
            refusal = _refusal(standings[tenant], template, now)
            result[tenant] = Admission(tenant, template, day, admitted=refusal is None, refusal=refusal)
    return result


@contextmanager
def reserved_run(
    rt: Runtime, tenant_id: str, template: str, admission: Admission | None = None
) -> Iterator[Admission]:
    """Admit one run and hold the organisation's quota claim while the caller writes its record.

    Without `admission` this admits the run (raising its 429 when refused) under the claim, so no other
    trigger of the organisation, on any instance, counts its usage between this admission and the run
    record that makes the new run part of it. With an `admission` from `admit_runs` (a fan-out chunk) it is
    taken as it is.
    """
    if admission is not None and (admission.tenant_id, admission.template) != (tenant_id, template):
        raise ValueError(
            f"admission for {admission.tenant_id} {admission.template} used for {tenant_id} {template}"
        )
    if admission is not None:
        admission.raise_if_refused()
        yield admission
        return
    with rt.claims.hold(f"quota/{tenant_id}", lease=QUOTA_LEASE):
        admission = admit_runs(rt, [tenant_id], template)[tenant_id]
        admission.raise_if_refused()
        yield admission
