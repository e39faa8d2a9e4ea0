"""Schedules: platform-wide ones (configs/schedules.yml), per-tenant ones (control table org_schedules), and
the dispatcher that works out which are due.

One Cloud Scheduler job per dispatcher cadence (`dispatchers:` in configs/schedules.yml) publishes
{"schema": "convergence.dispatch/v1", "cadence": <name>} to the schedules topic; never one job per tenant.
`run_dispatch_tick` runs `dispatch_due`, which publishes one convergence.schedule/v1 message per due slot.

When a slot is due, for each schedule (its cron read in its own time zone):
- the candidate is the latest slot at or before `now`. Older missed slots are never started: a dispatcher
  that was down starts only the most recent missed slot of each schedule, and none older than CATCH_UP;
- it is due when later than the last slot dispatched for that schedule. A schedule with no dispatch on record
  counts its slot only from its floor: a tenant schedule's creation time; for a platform schedule, the last
  period of its dispatcher (so a deploy never starts a backlog);
- each due (schedule_id, due_at) is claimed with one insert-if-absent statement before it is published, so a
  dispatcher message delivered twice, or two dispatchers at once, publish a slot once.
Time zones: a wall-clock slot in the hour repeated when clocks go back starts once (its first occurrence),
unless the hour field is `*`; a slot in the hour skipped when clocks go forward starts right after the gap.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.contracts.requests import SCHEDULE_TEMPLATE_PATTERN, ScheduleRequest
from common.bus.messages import DispatchMessage, ScheduleMessage
from common.errors import (
    BadRequest,
    ConfigurationError,
    Conflict,
    ConvergenceError,
    DependencyUnavailable,
    NotFound,
    TerminalError,
    ValidationFailed,
)
from common.metadata import control
from common.runtime import Runtime
from common.settings import CONFIGS_DIR
from common.templates import load_template, resolve_template
from common.templates.resolver import InvalidParameter
from common.tenancy import TENANT_ID_RE

log = logging.getLogger(__name__)

SCHEDULES_TABLE = "org_schedules"
DISPATCHES_TABLE = "schedule_dispatches"
MAX_SCHEDULES_PER_TENANT = 50
CATCH_UP = dt.timedelta(days=7)  # a slot missed by longer than this is never started
CLAIM_CHUNK = 1000  # slots per insert-if-absent statement, so its parameters stay small
PUBLISH_BATCH = 500
PLATFORM_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")  # no "-": never equal to a tenant schedule id (a UUID)
CADENCE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
SCHEDULE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

from common.services.cron import (
    iso_utc,
    latest_slot,
    longest_interval,
    next_slot,
    parse_cron,
    parse_time_zone,
    shortest_interval,
)

# -- configs/schedules.yml ------------------------------------------------------------------------------


class DispatcherConfig(BaseModel):
    """A Cloud Scheduler job ticking on `cron`; each tick publishes a convergence.dispatch/v1 message."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    time_zone: str = "Etc/UTC"
    description: str = ""


class PlatformSchedule(BaseModel):
    """One template for many tenants, started by its dispatcher when due."""

    model_config = ConfigDict(extra="forbid")

    cron: str
    time_zone: str
    template: str = Field(pattern=SCHEDULE_TEMPLATE_PATTERN)
    tenants: Literal["*"] | list[str]
    parameters: dict[str, Any] = Field(default_factory=dict)
    dispatcher: str | None = None  # the finest dispatcher when absent
    enabled: bool = True


class SchedulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dispatchers: dict[str, DispatcherConfig] = Field(min_length=1)
    schedules: dict[str, PlatformSchedule] = Field(default_factory=dict)


@dataclass(frozen=True)
class PlatformConfig:
    """configs/schedules.yml, checked; `periods` holds each dispatcher's longest gap between ticks."""

    dispatchers: dict[str, DispatcherConfig]
    periods: dict[str, dt.timedelta]
    schedules: dict[str, PlatformSchedule]

    @property
    def default_dispatcher(self) -> str:
        """The finest dispatcher: it starts every tenant schedule and platform ones naming none."""
        return min(self.periods, key=lambda name: (self.periods[name], name))

    def dispatcher_of(self, schedule: PlatformSchedule) -> str:
        return schedule.dispatcher or self.default_dispatcher


def check_platform_config(raw: Any) -> PlatformConfig:
    """Validate a decoded schedules file; ConfigurationError names what is wrong."""
    try:
        parsed = SchedulesFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigurationError(
            f"configs/schedules.yml is invalid: {exc.errors(include_url=False)}"
        ) from None
    periods = {}
    for name, dispatcher in parsed.dispatchers.items():
        try:
            if not CADENCE_RE.fullmatch(name):
                raise BadRequest(f"the name must match {CADENCE_RE.pattern}")
            periods[name] = longest_interval(parse_cron(dispatcher.cron))
            parse_time_zone(dispatcher.time_zone)
        except BadRequest as exc:
            raise ConfigurationError(f"configs/schedules.yml dispatcher {name}: {exc.message}") from None
    config = PlatformConfig(parsed.dispatchers, periods, parsed.schedules)
    for name, schedule in parsed.schedules.items():
        try:
            if not PLATFORM_NAME_RE.fullmatch(name):
                raise BadRequest(f"the name must match {PLATFORM_NAME_RE.pattern}")
            if isinstance(schedule.tenants, list) and not all(
                TENANT_ID_RE.fullmatch(t) for t in schedule.tenants
            ):
                raise BadRequest(
                    f'tenants must be "*" or a list of tenant ids matching {TENANT_ID_RE.pattern}'
                )
            dispatcher = config.dispatcher_of(schedule)
            if dispatcher not in periods:
                raise BadRequest(f"no dispatcher {dispatcher!r} under dispatchers")
            if shortest_interval(parse_cron(schedule.cron)) < periods[dispatcher]:
                raise BadRequest(f"it runs more often than its dispatcher {dispatcher} ticks")
            parse_time_zone(schedule.time_zone)
            check_runnable(schedule.template, schedule.parameters, tenant_id="schedule_check")
        except BadRequest as exc:
            raise ConfigurationError(f"configs/schedules.yml schedule {name}: {exc.message}") from None
    return config


@lru_cache(maxsize=1)
def platform_config() -> PlatformConfig:
    """configs/schedules.yml, read and checked once per instance."""
    try:
        raw = yaml.safe_load((CONFIGS_DIR / "schedules.yml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read configs/schedules.yml: {exc}") from None
    return check_platform_config(raw)


def check_runnable(template: str, parameters: dict[str, Any], *, tenant_id: str) -> None:
    """The template is runnable by tenants and the parameters resolve against it (else 400 naming it)."""
    provider, domain, name = template.split("/")
    try:
        loaded = load_template(provider, domain, name)
    except NotFound:
        raise BadRequest(f"no runnable template {template}", code="template_not_found") from None
    if "trigger_by" in parameters:
        raise InvalidParameter("trigger_by is set by the scheduler and cannot be a schedule parameter")
    resolve_template(
        loaded, tenant_id=tenant_id, provider=provider, domain=domain,
        template_name=name, run_id="schedule-validation", request=parameters,
    )  # fmt: skip


# -- tenant schedules (HTTP API) ----------------------------------------------------------------------------


def _view(row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    upcoming = next_slot(row["cron"], parse_time_zone(row["time_zone"]), now) if row["enabled"] else None
    return {
        "schedule_id": row["schedule_id"], "org_slug": row["org_slug"], "name": row["name"],
        "template": row["template"], "cron": row["cron"], "time_zone": row["time_zone"],
        "parameters": json.loads(row["parameters"]), "enabled": bool(row["enabled"]),
        "next_run_at": iso_utc(upcoming) if upcoming else None,
        "created_at": iso_utc(_aware(row["created_at"])),
    }  # fmt: skip


def create_schedule(rt: Runtime, org: str, request: ScheduleRequest) -> dict[str, Any]:
    """Store a tenant schedule after checking template, parameters, cron, time zone and the tenant's limit."""
    check_runnable(request.template, request.parameters, tenant_id=org)
    cron, zone = parse_cron(request.cron), parse_time_zone(request.time_zone)
    config = platform_config()
    finest = config.periods[config.default_dispatcher]
    if shortest_interval(cron) < finest:
        minutes = int(finest.total_seconds() // 60)
        raise ValidationFailed(
            f"cron {cron!r} runs more often than every {minutes} minutes, the finest cadence: schedules are"
            f" started by a dispatcher that ticks every {minutes} minutes",
            code="schedule_too_frequent",
        )
    now = _utcnow()
    row = {
        "schedule_id": str(uuid.uuid4()), "org_slug": org, "name": request.name, "template": request.template,
        "cron": cron, "time_zone": zone.key, "parameters": json.dumps(request.parameters, sort_keys=True),
        "enabled": request.enabled, "created_at": now,
    }  # fmt: skip
    table = control.control_ref(rt, SCHEDULES_TABLE)
    insert = (
        f"INSERT INTO {table} (schedule_id, org_slug, name, template, cron, time_zone, parameters,"
        " enabled, created_at) SELECT @schedule_id, @org_slug, @name, @template, @cron, @time_zone,"
        " @parameters, @enabled, @created_at FROM UNNEST([1]) AS one"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE org_slug = @org_slug AND name = @name)"
        f" AND (SELECT COUNT(*) FROM {table} WHERE org_slug = @org_slug) < @limit"
    )
    with rt.warehouse.lock(f"schedules:{org}"):
        if rt.warehouse.execute(insert, row | {"limit": MAX_SCHEDULES_PER_TENANT}) == 0:
            if request.name is not None and rt.warehouse.query(
                f"SELECT 1 AS taken FROM {table} WHERE org_slug = @org AND name = @name LIMIT 1",
                {"org": org, "name": request.name},
            ):
                raise Conflict(
                    f"a schedule named {request.name!r} already exists", code="schedule_name_taken"
                )
            raise ValidationFailed(
                f"a tenant may have at most {MAX_SCHEDULES_PER_TENANT} schedules; delete one first",
                code="schedule_limit_reached",
            )
    log.info(
        "schedule %s of %s stored: %s at %r (%s)", row["schedule_id"], org, request.template, cron, zone.key
    )
    return _view(row, now)


def list_schedules(rt: Runtime, org: str) -> dict[str, Any]:
    """The tenant's schedules, oldest first, each with its next slot (UTC)."""
    rows = rt.warehouse.query(
        f"SELECT * FROM {control.control_ref(rt, SCHEDULES_TABLE)} WHERE org_slug = @org"
        " ORDER BY created_at, schedule_id",
        {"org": org},
    )
    now = _utcnow()
    return {"schedules": [_view(row, now) for row in rows]}


def delete_schedule(rt: Runtime, org: str, schedule_id: str) -> dict[str, Any]:
    """Delete one of the tenant's schedules; another tenant's is as unknown as a made-up id."""
    deleted = 0
    if SCHEDULE_ID_RE.fullmatch(schedule_id or ""):
        with rt.warehouse.lock(f"schedules:{org}"):
            deleted = rt.warehouse.execute(
                f"DELETE FROM {control.control_ref(rt, SCHEDULES_TABLE)}"
                " WHERE org_slug = @org AND schedule_id = @schedule_id",
                {"org": org, "schedule_id": schedule_id},
            )
    if not deleted:
        raise NotFound("no such schedule", code="schedule_not_found")
    log.info("schedule %s of %s deleted", schedule_id, org)
    return {"schedule_id": schedule_id, "deleted": True}


# -- the dispatcher ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A schedule one dispatcher tick looks at, platform or tenant."""

    schedule_id: str
    template: str
    tenants: Literal["*"] | list[str]
    parameters: dict[str, Any]
    trigger_by: str
    cron: str
    time_zone: str
    floor: dt.datetime  # with no dispatch on record, slots count from here

    def message(self, due_at: dt.datetime) -> ScheduleMessage:
        return ScheduleMessage(
            template=self.template, tenants=self.tenants, parameters=self.parameters,
            trigger_by=self.trigger_by, trigger_type="schedule", schedule_id=self.schedule_id,
            due_at=iso_utc(due_at),
        )  # fmt: skip


def due_slot(
    cron: str, zone: ZoneInfo, now: dt.datetime, *, last_dispatched: dt.datetime | None, floor: dt.datetime
) -> dt.datetime | None:
    """The slot to start at `now` (UTC) or None: the latest slot at or before `now`, unless dispatched."""
    return _pick(latest_slot(cron, zone, now), now, last_dispatched, floor)


def _pick(
    slot: dt.datetime | None, now: dt.datetime, last_dispatched: dt.datetime | None, floor: dt.datetime
) -> dt.datetime | None:
    if slot is None or slot < now - CATCH_UP:
        return None
    if last_dispatched is not None:
        return slot if slot > last_dispatched else None
    return slot if slot >= floor else None


def _candidates(
    rt: Runtime, config: PlatformConfig, cadence: str | None, now: dt.datetime
) -> list[Candidate]:
    found = [
        Candidate(name, s.template, s.tenants, s.parameters, f"scheduler:{name}", s.cron, s.time_zone,
                  now - config.periods[config.dispatcher_of(s)])
        for name, s in config.schedules.items()
        if s.enabled and cadence in (None, config.dispatcher_of(s))
    ]  # fmt: skip
    if cadence not in (None, config.default_dispatcher):
        return found
    active = set(control.active_org_slugs(rt))
    rows = rt.warehouse.query(
        "SELECT schedule_id, org_slug, template, cron, time_zone, parameters, created_at"
        f" FROM {control.control_ref(rt, SCHEDULES_TABLE)} WHERE enabled"
    )
    found += [
        Candidate(r["schedule_id"], r["template"], [r["org_slug"]], json.loads(r["parameters"]),
                  f"schedule:{r['schedule_id']}", r["cron"], r["time_zone"], _aware(r["created_at"]))
        for r in rows
        if r["org_slug"] in active
    ]  # fmt: skip
    return found


def dispatch_due(rt: Runtime, cadence: str | None, now: dt.datetime) -> dict[str, Any]:
    """Publish one schedules message per due slot of the schedules `cadence` handles (all when None).

    A slot already dispatched is never published again. Returns counts and the published slots.
    """
    now = _aware(now)
    config = platform_config()
    if cadence is not None and cadence not in config.dispatchers:
        raise ConfigurationError(
            f"no dispatcher {cadence!r} in configs/schedules.yml", code="unknown_cadence"
        )
    if not control.is_bootstrapped(rt):
        raise ConfigurationError(
            "the control dataset is not bootstrapped; POST /api/v1/admin/bootstrap first"
        )
    candidates = _candidates(rt, config, cadence, now)
    since = now - CATCH_UP
    last = {
        r["schedule_id"]: _aware(r["last_due"])
        for r in rt.warehouse.query(
            f"SELECT schedule_id, MAX(due_at) AS last_due FROM {control.control_ref(rt, DISPATCHES_TABLE)}"
            " WHERE due_at >= @since GROUP BY schedule_id",
            {"since": since},
        )
    }
    slots: dict[tuple[str, str], dt.datetime | None] = {}  # tenant schedules often share a cron and a zone
    due: list[tuple[Candidate, dt.datetime]] = []
    for candidate in candidates:
        key = (candidate.cron, candidate.time_zone)
        try:
            if key not in slots:
                slots[key] = latest_slot(candidate.cron, parse_time_zone(candidate.time_zone), now)
        except BadRequest as exc:
            log.error("schedule %s skipped: %s", candidate.schedule_id, exc.message)
            continue
        slot = _pick(slots[key], now, last.get(candidate.schedule_id), candidate.floor)
        if slot is not None:
            due.append((candidate, slot))
    mine: list[tuple[Candidate, dt.datetime]] = []
    if due:
        claim_id = _claim(rt, due, cadence, now)
        owned = {
            (r["schedule_id"], _aware(r["due_at"]))
            for r in rt.warehouse.query(
                f"SELECT schedule_id, due_at FROM {control.control_ref(rt, DISPATCHES_TABLE)}"
                " WHERE claim_id = @claim_id AND due_at >= @since",
                {"claim_id": claim_id, "since": since},
            )
        }
        mine = [(c, slot) for c, slot in due if (c.schedule_id, slot) in owned]
        _publish(rt, mine, claim_id)
    return {
        "cadence": cadence, "now": iso_utc(now), "schedules": len(candidates), "due": len(due),
        "published": len(mine), "already_dispatched": len(due) - len(mine),
        "slots": [{"schedule_id": c.schedule_id, "due_at": iso_utc(slot)} for c, slot in mine],
    }  # fmt: skip


def _claim(
    rt: Runtime, due: list[tuple[Candidate, dt.datetime]], cadence: str | None, now: dt.datetime
) -> str:
    """Record each due slot unless it is on record already; return the claim id of the rows this call wrote.

    One INSERT ... SELECT ... WHERE NOT EXISTS per chunk: a single statement is atomic on both warehouses, and
    the warehouse lock serialises the dispatchers of one process (embedded mode is one process).
    """
    claim_id = uuid.uuid4().hex
    table = control.control_ref(rt, DISPATCHES_TABLE)
    insert = (
        f"INSERT INTO {table} (schedule_id, due_at, template, tenants, cadence, claim_id, dispatched_at)"
        " SELECT s.schedule_id, s.due_at, s.template, s.tenants, @cadence, @claim_id, @now"
        f" FROM UNNEST(@slots) AS s WHERE NOT EXISTS (SELECT 1 FROM {table} AS d"
        " WHERE d.schedule_id = s.schedule_id AND d.due_at = s.due_at)"
    )
    rows = [
        {
            "schedule_id": c.schedule_id,
            "due_at": slot,
            "template": c.template,
            "tenants": json.dumps(c.tenants),
        }
        for c, slot in due
    ]
    with rt.warehouse.lock("schedule-dispatch"):
        for first in range(0, len(rows), CLAIM_CHUNK):
            params = {
                "slots": rows[first : first + CLAIM_CHUNK],
                "cadence": cadence or "*",
                "claim_id": claim_id,
            }
            rt.warehouse.execute(insert, params | {"now": now})
    return claim_id


def _publish(rt: Runtime, mine: list[tuple[Candidate, dt.datetime]], claim_id: str) -> None:
    """Publish the claimed slots; if the bus fails, release the unpublished claims so a redelivery retries."""
    for first in range(0, len(mine), PUBLISH_BATCH):
        try:
            rt.bus.publish_many(
                rt.settings.schedules_topic, [c.message(s) for c, s in mine[first : first + PUBLISH_BATCH]]
            )
        except ConvergenceError as exc:
            rest = [c.schedule_id for c, _ in mine[first:]]
            rt.warehouse.execute(
                f"DELETE FROM {control.control_ref(rt, DISPATCHES_TABLE)} WHERE claim_id = @claim_id"
                " AND schedule_id IN UNNEST(@schedule_ids)",
                {"claim_id": claim_id, "schedule_ids": rest},
            )
            raise DependencyUnavailable(
                f"{len(rest)} due schedules were not published ({exc.message}); they start on redelivery"
            ) from None


def run_dispatch_tick(rt: Runtime, message: DispatchMessage) -> None:
    """Run one decoded dispatcher tick: start every due slot once. Terminal errors are logged, transient ones raise."""
    cadence, tick = message.cadence, message.now
    try:
        now = _aware(dt.datetime.fromisoformat(tick)) if tick else _utcnow()
    except ValueError:
        log.error("dropping dispatcher message of %s: now is not an ISO 8601 time", cadence)
        return
    try:
        outcome = dispatch_due(rt, cadence, now)
    except TerminalError as exc:
        log.error("dispatcher tick of %s not processed: %s", cadence, exc.message)
        return
    outcome.pop("slots")
    log.info("dispatcher tick of %s: %s", cadence, outcome)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    """UTC-aware (a warehouse may hand back naive UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
