"""The run and step records of a tenant: append-only status rows of `pipeline_runs` and `step_logs`.

This module owns every statement on those two tables. A run's or a step's status is its latest record
(highest `seq`): every write is an INSERT (never an UPDATE of a fresh row, which BigQuery refuses for
streamed rows), and a duplicate delivery that appends the same record again is harmless to readers.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from uuid6 import uuid7

from common.metadata import table_upgrades
from common.templates.models import ResolvedPipeline
from common.types import UtcDatetime, utcnow
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

RUN_STATUSES = ("PENDING", "RUNNING", "COMPLETE", "FAILED")
FINAL_RUN_STATUSES = frozenset({"COMPLETE", "FAILED"})
FINAL_STEP_STATUSES = frozenset({"COMPLETE", "FAILED", "SKIPPED"})
ACTIVE_RUN_STATUSES = ("PENDING", "RUNNING")
STATUS_QUERY_TENANTS = 500  # tenants' pipeline_runs per query of `latest_statuses`

# A run started longer ago than this and still PENDING or RUNNING was abandoned: it is not in flight (nor
# counted against a plan's concurrent runs), and the in-flight check reads only this many days of records.
IN_FLIGHT_HORIZON = dt.timedelta(days=1)
# Records of a run are written by instances whose clocks may differ a little from the one that named it.
RECORD_CLOCK_SKEW = dt.timedelta(hours=1)

_seq_lock = threading.Lock()
_seq_state = {"last": 0}


def new_run_id() -> str:
    """A new run id that carries its start time (a UUIDv7), so reads of one run prune partitions."""
    return str(uuid7())


def records_since(run_ids: Sequence[str]) -> dt.datetime | None:
    """The earliest `recorded_at` any record of these runs can carry: the oldest start time their ids hold,
    less RECORD_CLOCK_SKEW. None when an id holds no time (a run named by an older release: read it all).
    """
    starts = []
    for run_id in run_ids:
        try:
            parsed = uuid.UUID(run_id)
        except ValueError:
            return None
        if parsed.version != 7:
            return None
        starts.append(dt.datetime.fromtimestamp((parsed.int >> 80) / 1000, dt.UTC))
    return min(starts) - RECORD_CLOCK_SKEW if starts else None


def _since_filter(since: dt.datetime | None) -> str:
    # A plain comparison on the partitioning column, so BigQuery reads only the partitions from `since` on.
    return " AND recorded_at >= @since" if since is not None else ""


def next_seq() -> int:
    """A strictly increasing sequence number for ordering records written by this process."""
    with _seq_lock:
        value = max(time.time_ns(), _seq_state["last"] + 1)
        _seq_state["last"] = value
        return value


class Record(BaseModel):
    """A row of an append-only record table: columns the reader does not know are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def row(self) -> dict[str, Any]:
        return self.model_dump()


class RunRecord(Record):
    """One status record of a run (a row of pipeline_runs)."""

    pipeline_logging_id: str
    pipeline_id: str
    tenant_id: str
    provider: str
    domain: str
    template: str
    status: str
    trigger_type: str
    trigger_by: str | None = None
    parameters: str | None = None  # the resolved parameters, as JSON text
    config_snapshot: str | None = None  # the resolved pipeline; only on the PENDING record
    request_fingerprint: str | None = None
    idempotency_key: str | None = None
    bulk_id: str | None = None  # the bulk run that started it (POST /api/v1/admin/runs/bulk)
    error_message: str | None = None
    start_time: UtcDatetime | None = None
    end_time: UtcDatetime | None = None
    recorded_at: UtcDatetime
    seq: int

    @property
    def parameter_values(self) -> dict[str, Any]:
        return json.loads(self.parameters or "{}")

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_RUN_STATUSES


class StepRecord(Record):
    """One status record of a step of a run (a row of step_logs)."""

    pipeline_logging_id: str
    step_index: int
    step_id: str
    name: str | None = None
    ps_type: str
    status: str
    start_time: UtcDatetime | None = None
    end_time: UtcDatetime | None = None
    duration_ms: int | None = None
    rows_processed: int | None = None
    bytes_processed: int | None = None  # what the warehouse reported processing for the step (BigQuery)
    error_message: str | None = None
    attempt: int | None = None
    recorded_at: UtcDatetime
    seq: int

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STEP_STATUSES


def pending_record(
    pipeline: ResolvedPipeline,
    *,
    run_id: str,
    trigger_type: str,
    trigger_by: str,
    fingerprint: str,
    idempotency_key: str | None,
    bulk_id: str | None = None,
) -> RunRecord:
    """The PENDING record holding the resolved pipeline (built, not written)."""
    now = utcnow()
    return RunRecord(
        pipeline_logging_id=run_id,
        pipeline_id=pipeline.pipeline_id,
        tenant_id=pipeline.tenant_id,
        provider=pipeline.provider,
        domain=pipeline.domain,
        template=pipeline.template,
        status="PENDING",
        trigger_type=trigger_type,
        trigger_by=trigger_by,
        parameters=json.dumps(pipeline.parameters, sort_keys=True, default=str),
        config_snapshot=pipeline.model_dump_json(),
        request_fingerprint=fingerprint,
        idempotency_key=idempotency_key,
        bulk_id=bulk_id,
        start_time=now,
        recorded_at=now,
        seq=next_seq(),
    )


def create_run(
    wh: Warehouse,
    pipeline: ResolvedPipeline,
    *,
    run_id: str,
    trigger_type: str,
    trigger_by: str,
    fingerprint: str,
    idempotency_key: str | None,
    bulk_id: str | None = None,
) -> RunRecord:
    """Write the PENDING record holding the resolved pipeline; return it."""
    record = pending_record(
        pipeline, run_id=run_id, trigger_type=trigger_type, trigger_by=trigger_by, fingerprint=fingerprint,
        idempotency_key=idempotency_key, bulk_id=bulk_id,
    )  # fmt: skip
    table_upgrades.insert_rows(wh, pipeline.tenant_id, "pipeline_runs", [record.row()])
    return record


def append_run_status(
    wh: Warehouse, tenant_id: str, latest: RunRecord, status: str, *, error_message: str | None = None
) -> RunRecord:
    """Append a status record carrying the run's fields forward (the snapshot stays on the first record)."""
    now = utcnow()
    record = latest.model_copy(
        update={
            "status": status,
            "config_snapshot": None,
            "error_message": error_message if error_message is not None else latest.error_message,
            "end_time": now if status in FINAL_RUN_STATUSES else None,
            "recorded_at": now,
            "seq": next_seq(),
        }
    )
    table_upgrades.insert_rows(wh, tenant_id, "pipeline_runs", [record.row()])
    return record


def run_records(wh: Warehouse, tenant_id: str, run_id: str) -> list[RunRecord]:
    """Every record of one run, oldest first (empty when the run is not this tenant's)."""
    since = records_since([run_id])
    rows = wh.query(
        f"SELECT * FROM {table_ref(tenant_id, 'pipeline_runs')} WHERE pipeline_logging_id = @run_id"
        f"{_since_filter(since)} ORDER BY seq",
        {"run_id": run_id} | ({"since": since} if since is not None else {}),
    )
    return [RunRecord.model_validate(row) for row in rows]


def load_snapshot(records: list[RunRecord]) -> ResolvedPipeline:
    """The resolved pipeline the run was started with (kept on its PENDING record)."""
    pending = next(r for r in records if r.config_snapshot)
    return ResolvedPipeline.model_validate_json(pending.config_snapshot)  # type: ignore[arg-type]


def latest_runs(
    wh: Warehouse,
    tenant_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    fingerprint: str | None = None,
    idempotency_key: str | None = None,
    active_only: bool = False,
) -> list[RunRecord]:
    """The latest record of each run, newest first, optionally filtered (without the snapshot).

    `active_only` looks at runs recorded within IN_FLIGHT_HORIZON alone (only those partitions are read).
    """
    since = utcnow() - IN_FLIGHT_HORIZON if active_only else None
    rows = wh.query(
        f"""
        SELECT * EXCEPT (config_snapshot)
        FROM {table_ref(tenant_id, "pipeline_runs")}
        WHERE (@fingerprint IS NULL OR request_fingerprint = @fingerprint)
          AND (@idempotency_key IS NULL OR idempotency_key = @idempotency_key){_since_filter(since)}
        QUALIFY ROW_NUMBER() OVER (PARTITION BY pipeline_logging_id ORDER BY seq DESC) = 1
          AND (@status IS NULL OR status = @status)
          AND (NOT @active_only OR status IN ('PENDING', 'RUNNING'))
        ORDER BY start_time DESC, seq DESC
        LIMIT @limit
        """,
        {
            "fingerprint": fingerprint,
            "idempotency_key": idempotency_key,
            "status": status,
            "active_only": active_only,
            "limit": limit,
        }
        | ({"since": since} if since is not None else {}),
    )
    return [RunRecord.model_validate(row) for row in rows]


def append_step(
    wh: Warehouse, tenant_id: str, run_id: str, step_index: int, step: Any, **fields: Any
) -> StepRecord:
    """Append a status record of step `step_index` (a template step: step_id, name, ps_type)."""
    record = StepRecord(
        pipeline_logging_id=run_id,
        step_index=step_index,
        step_id=step.step_id,
        name=step.name,
        ps_type=step.ps_type,
        recorded_at=utcnow(),
        seq=next_seq(),
        **fields,
    )
    table_upgrades.insert_rows(wh, tenant_id, "step_logs", [record.row()])
    return record


def step_states(wh: Warehouse, tenant_id: str, run_ids: list[str]) -> dict[str, dict[int, StepRecord]]:
    """Latest record of every step of the given runs: {run_id: {step_index: record}}."""
    if not run_ids:
        return {}
    since = records_since(run_ids)
    rows = wh.query(
        f"""
        SELECT * FROM {table_ref(tenant_id, "step_logs")}
        WHERE pipeline_logging_id IN UNNEST(@run_ids){_since_filter(since)}
        QUALIFY ROW_NUMBER() OVER (PARTITION BY pipeline_logging_id, step_index ORDER BY seq DESC) = 1
        """,
        {"run_ids": run_ids} | ({"since": since} if since is not None else {}),
    )
    states: dict[str, dict[int, StepRecord]] = {rid: {} for rid in run_ids}
    for row in rows:
        record = StepRecord.model_validate(row)
        states[record.pipeline_logging_id][record.step_index] = record
    return states


def latest_statuses(
    wh: Warehouse, runs_by_tenant: Mapping[str, Sequence[str]], *, since: dt.datetime
) -> dict[str, dict[str, Any]]:
    """run id → its latest status and error_message, for runs of many tenants recorded since `since`.

    One query per STATUS_QUERY_TENANTS tenants (a UNION ALL of their pipeline_runs, as BigQuery allows up
    to 1,000 tables in a query), never one per tenant; `since` prunes the tables' day partitions. A run
    without a record since then is absent from the answer.
    """
    tenants = [tenant for tenant, run_ids in runs_by_tenant.items() if run_ids]
    found: dict[str, dict[str, Any]] = {}
    for first in range(0, len(tenants), STATUS_QUERY_TENANTS):
        batch = tenants[first : first + STATUS_QUERY_TENANTS]
        selects = " UNION ALL ".join(
            f"""(SELECT pipeline_logging_id, status, error_message FROM {table_ref(tenant, "pipeline_runs")}
                WHERE recorded_at >= @since AND pipeline_logging_id IN UNNEST(@run_ids)
                QUALIFY ROW_NUMBER() OVER (PARTITION BY pipeline_logging_id ORDER BY seq DESC) = 1)"""
            for tenant in batch
        )
        run_ids = [run_id for tenant in batch for run_id in runs_by_tenant[tenant]]
        for row in wh.query(selects, {"since": since, "run_ids": run_ids}):
            found[row["pipeline_logging_id"]] = row
    return found
