"""Tenant schedules (the HTTP API's /api/v1/schedules/<org>): create, list and delete a tenant's own schedules.

A schedule runs a template the tenant may run, with parameters that resolve against it, at every slot of a
five-field cron read in an IANA time zone; it may not run more often than the finest dispatcher ticks, and a
tenant has at most MAX_SCHEDULES_PER_TENANT. The finest dispatcher starts them (`common.services.dispatcher`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from typing import Any

from common.contracts.schedules import ScheduleRequest
from common.errors import Conflict, NotFound, ValidationFailed
from common.metadata import schedules as schedule_records
from common.runtime import Runtime
from common.services.cron import next_slot, parse_cron, parse_time_zone, shortest_interval
from common.services.schedule_config import check_runnable, platform_config
from common.types import iso_utc, utcnow

log = logging.getLogger(__name__)

MAX_SCHEDULES_PER_TENANT = 50
SCHEDULE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _view(row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    upcoming = next_slot(row["cron"], parse_time_zone(row["time_zone"]), now) if row["enabled"] else None
    return {
        "schedule_id": row["schedule_id"], "org_slug": row["org_slug"], "name": row["name"],
        "template": row["template"], "cron": row["cron"], "time_zone": row["time_zone"],
        "parameters": json.loads(row["parameters"]), "enabled": bool(row["enabled"]),
        "next_run_at": iso_utc(upcoming) if upcoming else None,
        "created_at": iso_utc(row["created_at"]),
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
    now = utcnow()
    row = {
        "schedule_id": str(uuid.uuid4()), "org_slug": org, "name": request.name, "template": request.template,
        "cron": cron, "time_zone": zone.key, "parameters": json.dumps(request.parameters, sort_keys=True),
        "enabled": request.enabled, "created_at": now,
    }  # fmt: skip
    stored = schedule_records.insert_schedule(rt, row, limit=MAX_SCHEDULES_PER_TENANT)
    if stored == "name_taken":
        raise Conflict(f"a schedule named {request.name!r} already exists", code="schedule_name_taken")
    if stored == "limit_reached":
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
    rows = schedule_records.tenant_schedules(rt, org)
    now = utcnow()
    return {"schedules": [_view(row, now) for row in rows]}


def delete_schedule(rt: Runtime, org: str, schedule_id: str) -> dict[str, Any]:
    """Delete one of the tenant's schedules; another tenant's is as unknown as a made-up id."""
    deleted = SCHEDULE_ID_RE.fullmatch(schedule_id or "") and schedule_records.delete_schedule(
        rt, org, schedule_id
    )
    if not deleted:
        raise NotFound("no such schedule", code="schedule_not_found")
    log.info("schedule %s of %s deleted", schedule_id, org)
    return {"schedule_id": schedule_id, "deleted": True}
