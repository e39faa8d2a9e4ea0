"""The repository of `bulk_runs` (one row per bulk run) and `bulk_run_tenants` (what became of each tenant of
one). The only module with their SQL.

Every write is a DML INSERT of many rows at once (`INSERT ... SELECT FROM UNNEST(@rows)`): a fan-out chunk
records all its tenants in one statement, whatever their number, and no row is streamed, so none is ever
out of reach of a later statement. DML INSERTs do not count against BigQuery's load-job or per-table
modification quotas. `bulk_run_tenants` is append-only: a tenant's outcome is its best record (a run's final
status, else a record naming its run, else the latest), so a chunk delivered twice, or a status read that
records the end of a run, never needs an UPDATE.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from common.metadata.control_dataset import control_ref
from common.metadata.runs import next_seq
from common.runtime import Runtime
from common.types import as_utc, utcnow

BULKS_TABLE = "bulk_runs"
TENANTS_TABLE = "bulk_run_tenants"
INSERT_CHUNK = 1000  # outcome rows per INSERT statement, so its parameters stay small

_OUTCOME_COLUMNS = ("tenant_id", "status", "outcome", "pipeline_logging_id", "error_message")


def _bulks(rt: Runtime) -> str:
    return control_ref(rt, BULKS_TABLE)


def _tenants(rt: Runtime) -> str:
    return control_ref(rt, TENANTS_TABLE)


# -- bulk_runs ----------------------------------------------------------------------------------------------


def insert_bulk(rt: Runtime, row: dict[str, Any]) -> None:
    """Record one bulk run (bulk_id, template, tenants, parameters, trigger_by, counts, fingerprint, key)."""
    values = row | {
        "tenants": json.dumps(row["tenants"]),
        "parameters": json.dumps(row["parameters"], sort_keys=True, default=str),
    }
    rt.warehouse.execute(
        f"INSERT INTO {_bulks(rt)} (bulk_id, template, tenants, parameters, trigger_by, tenant_count,"
        " chunk_count, request_fingerprint, idempotency_key, created_at)"
        " VALUES (@bulk_id, @template, @tenants, @parameters, @trigger_by, @tenant_count, @chunk_count,"
        " @request_fingerprint, @idempotency_key, @created_at)",
        values,
    )


def get_bulk(rt: Runtime, bulk_id: str) -> dict[str, Any] | None:
    """The bulk run's row (tenants and parameters decoded, created_at UTC), or None when there is none."""
    rows = rt.warehouse.query(
        f"SELECT * FROM {_bulks(rt)} WHERE bulk_id = @bulk_id ORDER BY created_at LIMIT 1",
        {"bulk_id": bulk_id},
    )
    if not rows:
        return None
    row = rows[0]
    return row | {
        "tenants": json.loads(row["tenants"]),
        "parameters": json.loads(row["parameters"]),
        "created_at": as_utc(row["created_at"]),
    }


# -- bulk_run_tenants ---------------------------------------------------------------------------------------


def record_outcomes(
    rt: Runtime, bulk_id: str, outcomes: Sequence[dict[str, Any]], *, chunk: int | None = None
) -> None:
    """Append outcome records (tenant_id, status, outcome, pipeline_logging_id, error_message) of `chunk`.

    One INSERT per INSERT_CHUNK records; each record gets this call's time and its own sequence number.
    """
    if not outcomes:
        return
    now = utcnow()
    rows = [
        {column: outcome.get(column) for column in _OUTCOME_COLUMNS} | {"seq": next_seq()}
        for outcome in outcomes
    ]
    insert = (
        f"INSERT INTO {_tenants(rt)} (bulk_id, tenant_id, status, outcome, pipeline_logging_id,"
        " error_message, chunk, recorded_at, seq)"
        " SELECT @bulk_id, r.tenant_id, r.status, r.outcome, r.pipeline_logging_id, r.error_message, @chunk,"
        " @now, r.seq FROM UNNEST(@rows) AS r"
    )
    for first in range(0, len(rows), INSERT_CHUNK):
        rt.warehouse.execute(
            insert,
            {"bulk_id": bulk_id, "chunk": chunk, "now": now, "rows": rows[first : first + INSERT_CHUNK]},
        )


def tenant_outcomes(rt: Runtime, bulk_id: str, *, since: dt.datetime) -> list[dict[str, Any]]:
    """Each recorded tenant's best outcome record, by tenant id (records older than `since` are not read).

    Best: a run's final status, else a record naming the tenant's run, else the latest record. So a chunk
    delivered twice (or a second chunk that lost a race to the first) cannot hide the run of a tenant.
    """
    return rt.warehouse.query(
        f"""
        SELECT tenant_id, status, outcome, pipeline_logging_id, error_message
        FROM {_tenants(rt)}
        WHERE bulk_id = @bulk_id AND recorded_at >= @since
        QUALIFY ROW_NUMBER() OVER (
          PARTITION BY tenant_id
          ORDER BY CASE
                     WHEN pipeline_logging_id IS NOT NULL AND status IN ('COMPLETE', 'FAILED') THEN 3
                     WHEN pipeline_logging_id IS NOT NULL THEN 2
                     ELSE 1
                   END DESC, seq DESC
        ) = 1
        ORDER BY tenant_id
        """,
        {"bulk_id": bulk_id, "since": since},
    )
