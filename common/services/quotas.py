"""Subscription quotas, enforced when a run starts: runs per UTC day, concurrent runs, templates.

Limits come from `org_subscriptions` (copied from configs/plans.yml at onboarding; an operator may change a
row). Counters live in `org_usage`, one row per organisation, created at onboarding:

- **max_runs_per_day**: runs admitted per organisation and UTC day, whatever started them (api, schedule,
  bulk). The run that would exceed it is refused with 429 `quota_exceeded` and Retry-After = seconds until
  the next UTC midnight.
- **max_concurrent_runs**: runs of the organisation whose latest record is PENDING or RUNNING (and that
  started within ACTIVE_RUN_HORIZON, so a run abandoned without a final record cannot hold a slot for
  ever). Above it: 429 `too_many_concurrent_runs`, Retry-After 30 s.
- **max_templates**: read as the number of *distinct templates* (`provider/domain/template`) the
  organisation may use at all — every template it has ever run counts, on any day. Running one of those
  again is always allowed; a new one above the limit is refused with 429 `quota_exceeded`. Waiting does not
  lift this limit (a plan change does), so its Retry-After is a full day: a hint not to retry soon.

Atomicity. Admission is one conditional UPDATE of the organisations' `org_usage` rows: it increments
`runs_started` (starting again from 0 on a new day) and adds the template only where the row still has room
under the limits, read by subqueries of `org_subscriptions` in the same statement. On BigQuery a DML
statement runs on one snapshot and commits atomically; two statements that change the same rows conflict,
and BigQuery either re-runs the later one on the committed data (where its condition then fails for the
last slot) or aborts it (a transient error: the caller gets 503 and nothing is started). Either way two
instances cannot both take the last slot. On DuckDB statements are serialised by the adapter. Which rows a
statement changed is told by the affected-row count; when a batch changed fewer rows than it aimed at (it
raced another admission), by reading which rows hold its admission id in `recent_admissions` (the last
RECENT_ADMISSIONS ids; more admissions of one organisation between an UPDATE and its read-back, about a
second apart, cannot happen in practice, and within one instance none can).

The concurrency count is read before the UPDATE, under an in-process lock per organisation that is held
until the run record is written (see `reserved_run`): exact within one process (embedded mode). Across
instances (gcp mode) two triggers of one organisation may both see the last free slot; the overshoot is at
most one run per instance that triggers at that moment. Admission for a bulk chunk (`admit_runs`) reads the
counts once for the whole chunk, so an API trigger racing it may overshoot by one as well.

Cost. `admit_runs` checks and reserves for up to 500 organisations (a fan-out chunk) with a constant
number of statements, and repeats that per 500 beyond: one read (subscriptions, counters and, in one
UNION ALL, the active runs of each tenant's `pipeline_runs`), one INSERT only when some organisation has
no counter row yet, one UPDATE, and one read back only when the UPDATE changed fewer rows than expected
(a race). A single trigger costs two. Each
admission is one mutating DML on `org_usage`; BigQuery runs two per table at a time and queues 20, which
bounds API triggers in gcp mode to a few per second platform-wide — bulk runs go through `admit_runs`.

The statements themselves belong to the repositories of the tables (`common.metadata.usage`,
`common.metadata.subscriptions`); this module decides what is admitted, what a refusal says and its Retry-After.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from common.errors import RateLimited
from common.metadata import usage
from common.metadata.subscriptions import PlanLimits, plans
from common.runtime import Runtime
from common.tenancy import validate_tenant_id
from common.types import utcnow

DEFAULT_PLAN = "starter"
CONCURRENCY_RETRY_AFTER = 30
TEMPLATES_RETRY_AFTER = 86_400
ACTIVE_RUN_HORIZON = dt.timedelta(days=1)
# The read joins each tenant's pipeline_runs; BigQuery allows 1,000 tables in one query.
MAX_TENANTS_PER_ADMISSION = 500
RECENT_ADMISSIONS = 64  # admission ids a row remembers; a read-back follows its UPDATE within a second

# Within this instance an admission's UPDATE and its read-back run with no other admission between them.
_admitting = threading.Lock()


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
    used: bool = False  # set once a run record holds the reservation; unused ones go to release_runs

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
    has_usage: bool = False
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
        if tenant in standings and not row["has_usage"]:
            continue
        has_plan = row["plan"] is not None
        standings[tenant] = _Standing(
            tenant_id=tenant,
            plan=row["plan"] if has_plan else DEFAULT_PLAN,
            max_runs=int(row["max_runs_per_day"] if has_plan else defaults["max_runs_per_day"]),
            max_concurrent=int(row["max_concurrent_runs"] if has_plan else defaults["max_concurrent_runs"]),
            max_templates=int(row["max_templates"] if has_plan else defaults["max_templates"]),
            has_usage=bool(row["has_usage"]),
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
    """Check and reserve one run of `template` for each organisation, in a constant number of statements.

    Two statements per MAX_TENANTS_PER_ADMISSION (500) organisations, whatever their number below that.

    Returns {tenant_id: Admission} for every distinct id given. An admitted organisation has a slot of
    today's runs taken (and the template counted); pass the Admission to `pipelines.start_run(...,
    admission=...)`, and give back the ones that started nothing with `release_runs`.
    """
    now = now or utcnow()
    day = now.date()
    tenants = [validate_tenant_id(t, field="tenant_id") for t in dict.fromkeys(tenant_ids)]
    if not tenants:
        return {}
    result: dict[str, Admission] = {}
    if len(tenants) > MAX_TENANTS_PER_ADMISSION:
        for start in range(0, len(tenants), MAX_TENANTS_PER_ADMISSION):
            part = tenants[start : start + MAX_TENANTS_PER_ADMISSION]
            result |= admit_runs(rt, part, template, now=now)
        return result
    standings = _read_standings(rt, tenants, day, now)
    candidates: list[str] = []
    for tenant in tenants:
        refusal = _refusal(standings[tenant], template, now)
        result[tenant] = Admission(tenant, template, day, admitted=refusal is None, refusal=refusal)
        if refusal is None:
            candidates.append(tenant)
    if not candidates:
        return result
    missing = [t for t in candidates if not standings[t].has_usage]
    if missing:
        usage.create_missing(rt, missing, now=now)
    admission_id = uuid.uuid4().hex
    defaults = _default_limits()
    with _admitting:
        changed = usage.reserve(
            rt, candidates, template, admission_id, now=now, recent=RECENT_ADMISSIONS,
            default_runs=defaults["max_runs_per_day"], default_templates=defaults["max_templates"],
        )  # fmt: skip
        if changed >= len(candidates):
            return result
        # Fewer rows changed than expected: another admission took the last slot of some; find out which.
        rows = usage.read_back(rt, candidates, admission_id, day=day)
    for tenant in candidates:
        row = rows.get(tenant)
        if row is not None and row["admitted"]:
            continue
        standing = standings[tenant]
        if row is not None:
            standing.runs_today, standing.templates = (
                int(row["runs_today"]),
                list(row["templates_used"] or []),
            )
        refusal = _refusal(standing, template, now) or QuotaExceeded(
            f"{standing.plan} plan limits were reached by a concurrent request; try again",
            retry_after=CONCURRENCY_RETRY_AFTER, plan=standing.plan,
        )  # fmt: skip
        result[tenant] = Admission(tenant, template, day, admitted=False, refusal=refusal)
    return result


def release_runs(rt: Runtime, admissions: Iterable[Admission], *, now: dt.datetime | None = None) -> int:
    """Give back the slots of admitted runs that were not started (a replay, a run in flight, a failure).

    One statement per UTC day involved (one, except across midnight). A slot of an earlier day is not
    given back to today. A template counted by the admission stays counted.
    """
    by_day: dict[dt.date, list[Admission]] = {}
    for admission in admissions:
        if admission.admitted and not admission.used:
            by_day.setdefault(admission.day, []).append(admission)
    released = 0
    for day, unused in by_day.items():
        released += usage.release(rt, sorted({a.tenant_id for a in unused}), day=day, now=now or utcnow())
        for admission in unused:
            admission.admitted = False
    return released


@contextmanager
def reserved_run(
    rt: Runtime, tenant_id: str, template: str, admission: Admission | None = None
) -> Iterator[Admission]:
    """Hold a slot for one run while the caller writes its record; a failure inside gives the slot back.

    Without `admission` this admits the run (raising its 429 when refused). The organisation's lock is held
    throughout, so in one process no other trigger can count the runs in flight between this admission and
    the run record that makes the new run one of them.
    """
    if admission is not None and (admission.tenant_id, admission.template) != (tenant_id, template):
        raise ValueError(
            f"admission for {admission.tenant_id} {admission.template} used for {tenant_id} {template}"
        )
    with rt.claims.hold(f"quota/{tenant_id}"):
        if admission is None:
            admission = admit_runs(rt, [tenant_id], template)[tenant_id]
        admission.raise_if_refused()
        try:
            yield admission
        except BaseException:
            release_runs(rt, [admission])
            raise
        admission.used = True
