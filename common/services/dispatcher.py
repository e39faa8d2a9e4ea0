"""The dispatcher: on each tick of a cadence, start every platform and tenant schedule that is due, once.

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
  dispatcher message delivered twice, or two dispatchers at once, publish a slot once
  (`common.metadata.schedules.claim_slots`).
Time zones: a wall-clock slot in the hour repeated when clocks go back starts once (its first occurrence),
unless the hour field is `*`; a slot in the hour skipped when clocks go forward starts right after the gap.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

from common.bus.messages import DispatchMessage, ScheduleMessage
from common.errors import (
    BadRequest,
    ConfigurationError,
    ConvergenceError,
    DependencyUnavailable,
    TerminalError,
)
from common.metadata import organizations
from common.metadata import schedules as schedule_records
from common.metadata.control_dataset import is_bootstrapped
from common.runtime import Runtime
from common.services.cron import latest_slot, parse_time_zone
from common.services.schedule_config import PlatformConfig, platform_config
from common.types import as_utc, iso_utc, utcnow

log = logging.getLogger(__name__)

CATCH_UP = dt.timedelta(days=7)  # a slot missed by longer than this is never started
PUBLISH_BATCH = 500


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
    # A platform schedule starts only for tenants that can run its template; a tenant's own schedule always
    # starts (the tenant asked for that run, and a failing run tells it what is missing).
    only_ready: bool = True

    def message(self, due_at: dt.datetime) -> ScheduleMessage:
        return ScheduleMessage(
            template=self.template, tenants=self.tenants, parameters=self.parameters,
            trigger_by=self.trigger_by, trigger_type="schedule", schedule_id=self.schedule_id,
            due_at=iso_utc(due_at), only_ready=self.only_ready,
        )  # fmt: skip


Slot = tuple[Candidate, dt.datetime]  # a schedule and the slot of it that is due


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
    active = set(organizations.active_org_slugs(rt))
    found += [
        Candidate(r["schedule_id"], r["template"], [r["org_slug"]], json.loads(r["parameters"]),
                  f"schedule:{r['schedule_id']}", r["cron"], r["time_zone"], r["created_at"],
                  only_ready=False)
        for r in schedule_records.enabled_schedules(rt)
        if r["org_slug"] in active
    ]  # fmt: skip
    return found


def dispatch_due(rt: Runtime, cadence: str | None, now: dt.datetime) -> dict[str, Any]:
    """Publish one schedules message per due slot of the schedules `cadence` handles (all when None).

    A slot already dispatched is never published again. Returns counts and the published slots.
    """
    now = as_utc(now)
    config = platform_config()
    if cadence is not None and cadence not in config.dispatchers:
        raise ConfigurationError(
            f"no dispatcher {cadence!r} in configs/schedules.yml", code="unknown_cadence"
        )
    if not is_bootstrapped(rt):
        raise ConfigurationError(
            "the control dataset is not bootstrapped; POST /api/v1/admin/bootstrap first"
        )
    candidates = _candidates(rt, config, cadence, now)
    since = now - CATCH_UP
    last = schedule_records.last_dispatched(rt, since=since)
    slots: dict[tuple[str, str], dt.datetime | None] = {}  # tenant schedules often share a cron and a zone
    due: list[Slot] = []
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
    mine: list[Slot] = []
    if due:
        claim_id = schedule_records.claim_slots(
            rt,
            [{"schedule_id": c.schedule_id, "due_at": slot, "template": c.template, "tenants": c.tenants}
             for c, slot in due],
            cadence=cadence, now=now,
        )  # fmt: skip
        owned = schedule_records.claimed_slots(rt, claim_id, since=since)
        mine = [(c, slot) for c, slot in due if (c.schedule_id, slot) in owned]
        _publish(rt, mine, claim_id)
    return {
        "cadence": cadence, "now": iso_utc(now), "schedules": len(candidates), "due": len(due),
        "published": len(mine), "already_dispatched": len(due) - len(mine),
        "slots": [{"schedule_id": c.schedule_id, "due_at": iso_utc(slot)} for c, slot in mine],
    }  # fmt: skip


def _publish(rt: Runtime, mine: list[Slot], claim_id: str) -> None:
    """Publish the claimed slots; if the bus fails, release the unpublished claims so a redelivery retries."""
    for first in range(0, len(mine), PUBLISH_BATCH):
        try:
            rt.bus.publish_many(
                rt.settings.schedules_topic, [c.message(s) for c, s in mine[first : first + PUBLISH_BATCH]]
            )
        except ConvergenceError as exc:
            rest = [c.schedule_id for c, _ in mine[first:]]
            schedule_records.release_claims(rt, claim_id, rest)
            raise DependencyUnavailable(
                f"{len(rest)} due schedules were not published ({exc.message}); they start on redelivery"
            ) from None


def run_dispatch_tick(rt: Runtime, message: DispatchMessage) -> None:
    """Run one decoded dispatcher tick: start every due slot once. Terminal errors are logged, transient ones raise."""
    cadence, tick = message.cadence, message.now
    try:
        now = as_utc(dt.datetime.fromisoformat(tick)) if tick else utcnow()
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
