"""The repository of `org_schedules` (tenant schedules) and `schedule_dispatches` (the slots a dispatcher
started). The only module with their SQL.

A slot is claimed before it is published with one insert-if-absent statement per chunk, issued while the
dispatcher holds the platform-wide `schedule-dispatch` claim (`common.claims`: atomic across instances; two
concurrent BigQuery INSERTs would not see each other's rows). So a dispatcher message delivered twice, or two
dispatchers at once on any instances, claim a slot once. One hold per tick costs two Cloud Storage writes.
Changes to one tenant's schedules hold `schedules/<org>` so its count and name checks stay exact.
Timestamps read back are UTC-aware (a warehouse may hand back naive UTC).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Literal

from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.types import as_utc, utcnow

SCHEDULES_TABLE = "org_schedules"
DISPATCHES_TABLE = "schedule_dispatches"
CLAIM_CHUNK = 1000  # slots per insert-if-absent statement, so its parameters stay small
# Dispatchers claim slots one at a time platform-wide (one hold per tick, see claim_slots).
DISPATCH_LEASE_SECONDS = 120.0

Stored = Literal["stored", "name_taken", "limit_reached"]


def _schedules(rt: Runtime) -> str:
    return control_ref(rt, SCHEDULES_TABLE)


def _dispatches(rt: Runtime) -> str:
    return control_ref(rt, DISPATCHES_TABLE)


def _with_utc(row: dict[str, Any], *columns: str) -> dict[str, Any]:
    return row | {column: as_utc(row[column]) for column in columns}


# -- org_schedules --------------------------------------------------------------------------------------------


def insert_schedule(rt: Runtime, row: dict[str, Any], *, limit: int) -> Stored:
    """Store a tenant schedule row unless its name is taken or the tenant already has `limit` schedules."""
    table, org = _schedules(rt), row["org_slug"]
    insert = (
        f"INSERT INTO {table} (schedule_id, org_slug, name, template, cron, time_zone, parameters,"
        " enabled, created_at) SELECT @schedule_id, @org_slug, @name, @template, @cron, @time_zone,"
        " @parameters, @enabled, @created_at FROM UNNEST([1]) AS one"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE org_slug = @org_slug AND name = @name)"
        f" AND (SELECT COUNT(*) FROM {table} WHERE org_slug = @org_slug) < @limit"
    )
    with rt.claims.hold(f"schedules/{org}"):
        if rt.warehouse.execute(insert, row | {"limit": limit}):
            return "stored"
        if row["name"] is not None and rt.warehouse.query(
            f"SELECT 1 AS taken FROM {table} WHERE org_slug = @org AND name = @name LIMIT 1",
            {"org": org, "name": row["name"]},
        ):
            return "name_taken"
        return "limit_reached"


def tenant_schedules(rt: Runtime, org: str) -> list[dict[str, Any]]:
    """The tenant's schedule rows, oldest first."""
    rows = rt.warehouse.query(
        f"SELECT * FROM {_schedules(rt)} WHERE org_slug = @org ORDER BY created_at, schedule_id",
        {"org": org},
    )
    return [_with_utc(row, "created_at") for row in rows]


def enabled_schedules(rt: Runtime) -> list[dict[str, Any]]:
    """Every enabled tenant schedule, of every tenant (the dispatcher's candidates)."""
    rows = rt.warehouse.query(
        "SELECT schedule_id, org_slug, template, cron, time_zone, parameters, created_at"
        f" FROM {_schedules(rt)} WHERE enabled"
    )
    return [_with_utc(row, "created_at") for row in rows]


def delete_schedule(rt: Runtime, org: str, schedule_id: str) -> bool:
    """Delete one of the tenant's schedules; False when it has none of that id."""
    with rt.claims.hold(f"schedules/{org}"):
        deleted = rt.warehouse.execute(
            f"DELETE FROM {_schedules(rt)} WHERE org_slug = @org AND schedule_id = @schedule_id",
            {"org": org, "schedule_id": schedule_id},
        )
    return bool(deleted)


# -- schedule_dispatches ----------------------------------------------------------------------------------------


def last_dispatched(rt: Runtime, *, since: dt.datetime) -> dict[str, dt.datetime]:
    """schedule id → the latest slot dispatched for it at or after `since`."""
    rows = rt.warehouse.query(
        f"SELECT schedule_id, MAX(due_at) AS last_due FROM {_dispatches(rt)}"
        " WHERE due_at >= @since GROUP BY schedule_id",
        {"since": since},
    )
    return {r["schedule_id"]: as_utc(r["last_due"]) for r in rows}


def claim_slots(rt: Runtime, slots: list[dict[str, Any]], *, cadence: str | None, now: dt.datetime) -> str:
    """Record each slot (schedule_id, due_at, template, tenants) unless it is on record already.

    Returns the claim id of the rows this call wrote: `claimed_slots` tells which slots are this caller's.
    """
    claim_id = uuid.uuid4().hex
    table = _dispatches(rt)
    insert = (
        f"INSERT INTO {table} (schedule_id, due_at, template, tenants, cadence, claim_id, dispatched_at)"
        " SELECT s.schedule_id, s.due_at, s.template, s.tenants, @cadence, @claim_id, @now"
        f" FROM UNNEST(@slots) AS s WHERE NOT EXISTS (SELECT 1 FROM {table} AS d"
        " WHERE d.schedule_id = s.schedule_id AND d.due_at = s.due_at)"
    )
    rows = [
        {
            "schedule_id": slot["schedule_id"],
            "due_at": slot["due_at"],
            "template": slot["template"],
            "tenants": json.dumps(slot["tenants"]),
        }
        for slot in slots
    ]
    with rt.claims.hold("schedule-dispatch", lease=DISPATCH_LEASE_SECONDS, wait=DISPATCH_LEASE_SECONDS):
        for first in range(0, len(rows), CLAIM_CHUNK):
            params = {
                "slots": rows[first : first + CLAIM_CHUNK],
                "cadence": cadence or "*",
                "claim_id": claim_id,
            }
            rt.warehouse.execute(insert, params | {"now": now})
    return claim_id


def claimed_slots(rt: Runtime, claim_id: str, *, since: dt.datetime) -> set[tuple[str, dt.datetime]]:
    """The (schedule_id, due_at) slots `claim_id` wrote, due at or after `since`."""
    rows = rt.warehouse.query(
        f"SELECT schedule_id, due_at FROM {_dispatches(rt)} WHERE claim_id = @claim_id AND due_at >= @since",
        {"claim_id": claim_id, "since": since},
    )
    return {(r["schedule_id"], as_utc(r["due_at"])) for r in rows}


def release_claims(rt: Runtime, claim_id: str, schedule_ids: list[str]) -> None:
    """Forget the slots of `schedule_ids` that `claim_id` wrote, so a redelivered tick claims them again."""
    rt.warehouse.execute(
        f"DELETE FROM {_dispatches(rt)} WHERE claim_id = @claim_id AND schedule_id IN UNNEST(@schedule_ids)",
        {"claim_id": claim_id, "schedule_ids": schedule_ids},
    )


# -- what each chunk of a dispatched slot did ---------------------------------------------------------------

CHUNKS_TABLE = "schedule_dispatch_chunks"
CHUNK_COUNTS = ("tenants", "started", "skipped", "refused", "handed_on")


def record_chunk(rt: Runtime, row: dict[str, Any], skipped: dict[str, str]) -> None:
    """Record what one chunk message of a slot did, unless this very message is on record already.

    `row` holds schedule_id, due_at, chunk, message_key, template and the CHUNK_COUNTS; a redelivered
    message has the same message_key and writes nothing (insert-if-absent, one statement).
    """
    table = control_ref(rt, CHUNKS_TABLE)
    rt.warehouse.execute(
        f"INSERT INTO {table} (schedule_id, due_at, chunk, message_key, template, tenants, started, skipped,"
        " refused, handed_on, skipped_tenants, recorded_at)"
        " SELECT @schedule_id, @due_at, @chunk, @message_key, @template, @tenants, @started, @skipped,"
        " @refused, @handed_on, @skipped_tenants, @recorded_at"
        f" FROM UNNEST([1]) WHERE NOT EXISTS (SELECT 1 FROM {table} AS c WHERE c.schedule_id = @schedule_id"
        " AND c.due_at = @due_at AND c.message_key = @message_key)",
        row
        | {
            "skipped_tenants": json.dumps(skipped, sort_keys=True) if skipped else None,
            "recorded_at": utcnow(),
        },
    )


def slot_outcome(rt: Runtime, schedule_id: str, due_at: dt.datetime) -> dict[str, Any]:
    """A dispatched slot's totals over its chunks, and every tenant it skipped with the reason."""
    rows = rt.warehouse.query(
        f"SELECT * FROM {control_ref(rt, CHUNKS_TABLE)} WHERE schedule_id = @schedule_id AND due_at = @due_at",
        {"schedule_id": schedule_id, "due_at": due_at},
    )
    totals = {name: sum(int(r[name]) for r in rows) for name in CHUNK_COUNTS}
    skipped: dict[str, str] = {}
    for row in rows:
        skipped.update(json.loads(row["skipped_tenants"] or "{}"))
    return {
        "schedule_id": schedule_id,
        "due_at": due_at,
        "chunks": len(rows),
        **totals,
        "skipped_tenants": skipped,
    }
