"""Run and step records: append-only status rows in the tenant's dataset; the latest row is the status.

Append-only keeps every write an INSERT (never an UPDATE of a freshly written row, which BigQuery refuses
for streamed rows), and makes duplicate deliveries harmless: readers take the latest record per run/step.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from typing import Any

from common.templates.models import ResolvedPipeline
from common.types import utcnow
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

RUN_STATUSES = ("PENDING", "RUNNING", "COMPLETE", "FAILED")
FINAL_RUN_STATUSES = frozenset({"COMPLETE", "FAILED"})
FINAL_STEP_STATUSES = frozenset({"COMPLETE", "FAILED", "SKIPPED"})
ACTIVE_RUN_STATUSES = ("PENDING", "RUNNING")

_seq_lock = threading.Lock()
_seq_state = {"last": 0}


def next_seq() -> int:
    """A strictly increasing sequence number for ordering records written by this process."""
    with _seq_lock:
        value = max(time.time_ns(), _seq_state["last"] + 1)
        _seq_state["last"] = value
        return value


def _carried(record: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in record.items() if k not in {"config_snapshot", "recorded_at", "seq"}}
    return keep


def create_run(
    wh: Warehouse,
    pipeline: ResolvedPipeline,
    *,
    run_id: str,
    trigger_type: str,
    trigger_by: str,
    fingerprint: str,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """Write the PENDING record holding the resolved pipeline; return the run record."""
    now = utcnow()
    record = {
        "pipeline_logging_id": run_id,
        "pipeline_id": pipeline.pipeline_id,
        "tenant_id": pipeline.tenant_id,
        "provider": pipeline.provider,
        "domain": pipeline.domain,
        "template": pipeline.template,
        "status": "PENDING",
        "trigger_type": trigger_type,
        "trigger_by": trigger_by,
        "parameters": json.dumps(pipeline.parameters, sort_keys=True, default=str),
        "config_snapshot": pipeline.model_dump_json(),
        "request_fingerprint": fingerprint,
        "idempotency_key": idempotency_key,
        "error_message": None,
        "start_time": now,
        "end_time": None,
        "recorded_at": now,
        "seq": next_seq(),
    }
    wh.insert_rows(pipeline.tenant_id, "pipeline_runs", [record])
    return record


def append_run_status(
    wh: Warehouse, tenant_id: str, latest: dict[str, Any], status: str, *, error_message: str | None = None
) -> dict[str, Any]:
    """Append a status record carrying the run's fields forward."""
    now = utcnow()
    record = _carried(latest) | {
        "status": status,
        "error_message": error_message if error_message is not None else latest.get("error_message"),
        "end_time": now if status in FINAL_RUN_STATUSES else None,
        "recorded_at": now,
        "seq": next_seq(),
    }
    wh.insert_rows(tenant_id, "pipeline_runs", [record])
    return record


def run_records(wh: Warehouse, tenant_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every record of one run, oldest first (empty when the run is not this tenant's)."""
    return wh.query(
        f"SELECT * FROM {table_ref(tenant_id, 'pipeline_runs')} WHERE pipeline_logging_id = @run_id ORDER BY seq",
        {"run_id": run_id},
    )


def load_snapshot(records: list[dict[str, Any]]) -> ResolvedPipeline:
    pending = next(r for r in records if r.get("config_snapshot"))
    return ResolvedPipeline.model_validate_json(pending["config_snapshot"])


def latest_runs(
    wh: Warehouse,
    tenant_id: str,
    *,
    status: str | None = None,
    limit: int = 50,
    fingerprint: str | None = None,
    idempotency_key: str | None = None,
    active_only: bool = False,
) -> list[dict[str, Any]]:
    """The latest record of each run, newest first, optionally filtered."""
    return wh.query(
        f"""
        SELECT * EXCEPT (config_snapshot)
        FROM {table_ref(tenant_id, 'pipeline_runs')}
        WHERE (@fingerprint IS NULL OR request_fingerprint = @fingerprint)
          AND (@idempotency_key IS NULL OR idempotency_key = @idempotency_key)
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
        },
    )


def append_step(wh: Warehouse, tenant_id: str, run_id: str, step_index: int, step: Any, **fields: Any) -> dict:
    """Append a step status record."""
    record = {
        "pipeline_logging_id": run_id,
        "step_index": step_index,
        "step_id": step.step_id,
        "name": step.name,
        "ps_type": step.ps_type,
        "recorded_at": utcnow(),
        "seq": next_seq(),
    } | fields
    wh.insert_rows(tenant_id, "step_logs", [record])
    return record


def step_states(wh: Warehouse, tenant_id: str, run_ids: list[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """Latest record of every step of the given runs: {run_id: {step_index: record}}."""
    if not run_ids:
        return {}
    rows = wh.query(
        f"""
        SELECT * FROM {table_ref(tenant_id, 'step_logs')}
        WHERE pipeline_logging_id IN UNNEST(@run_ids)
        QUALIFY ROW_NUMBER() OVER (PARTITION BY pipeline_logging_id, step_index ORDER BY seq DESC) = 1
        """,
        {"run_ids": run_ids},
    )
    states: dict[str, dict[int, dict[str, Any]]] = {rid: {} for rid in run_ids}
    for row in rows:
        states[row["pipeline_logging_id"]][int(row["step_index"])] = row
    return states


def _iso(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, dt.datetime) else value


def _duration_ms(start: Any, end: Any) -> int | None:
    if isinstance(start, dt.datetime) and isinstance(end, dt.datetime):
        return int((end - start).total_seconds() * 1000)
    return None


def run_view(latest: dict[str, Any], steps: dict[int, dict[str, Any]], pipeline: ResolvedPipeline | None) -> dict:
    """The run object of CONTRACT §2."""
    step_views = []
    planned = pipeline.steps if pipeline else []
    indexes = sorted(set(range(len(planned))) | set(steps))
    for index in indexes:
        record = steps.get(index)
        plan = planned[index] if index < len(planned) else None
        status = record["status"] if record else "PENDING"
        if record and status == "RETRYING":
            status = "RUNNING"
        step_views.append(
            {
                "step_index": index,
                "step_id": record["step_id"] if record else plan.step_id,
                "name": record["name"] if record else plan.name,
                "ps_type": record["ps_type"] if record else plan.ps_type,
                "status": status,
                "start_time": _iso(record.get("start_time")) if record else None,
                "end_time": _iso(record.get("end_time")) if record else None,
                "duration_ms": record.get("duration_ms") if record else None,
                "rows_processed": record.get("rows_processed") if record else None,
                "error_message": record.get("error_message") if record else None,
            }
        )
    return {
        "pipeline_logging_id": latest["pipeline_logging_id"],
        "pipeline_id": latest["pipeline_id"],
        "tenant_id": latest["tenant_id"],
        "provider": latest["provider"],
        "domain": latest["domain"],
        "template": latest["template"],
        "status": latest["status"],
        "trigger_type": latest["trigger_type"],
        "trigger_by": latest["trigger_by"],
        "start_time": _iso(latest["start_time"]),
        "end_time": _iso(latest["end_time"]),
        "duration_ms": _duration_ms(latest["start_time"], latest["end_time"]),
        "parameters": json.loads(latest["parameters"] or "{}"),
        "error_message": latest["error_message"],
        "steps": step_views,
    }
