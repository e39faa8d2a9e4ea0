"""Run records of many tenants at once: what a fan-out chunk reads and writes of `pipeline_runs`.

A chunk starts one template for up to FANOUT_CHUNK_SIZE tenants, each with its own dataset. Asking each
tenant's tables in turn costs a query (a BigQuery job) per tenant; here a chunk's reads are one UNION ALL of
the tenants' tables (at most TENANTS_PER_QUERY tables a query: BigQuery allows 1,000) and its PENDING
records are INSERTs run together (`run_atomically`, one script job per TENANTS_PER_WRITE tenants: a BigQuery
transaction may change at most 100 tables). So a chunk costs a number of statements bounded by its size
over those limits, never one per tenant.

Each branch of a UNION ALL is a plain filtered scan; the latest-record-per-run window runs once over their
union. (A window or subqueries inside every branch make DuckDB's planning grow with the square of the
branches.) Records are append-only as in `common.metadata.runs`, whose `RunRecord` these are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import ConvergenceError
from common.metadata import table_upgrades
from common.metadata.runs import IN_FLIGHT_HORIZON, RunRecord
from common.types import utcnow
from common.warehouse.base import Warehouse
from common.warehouse.sql import quote_identifier, table_ref

TENANTS_PER_QUERY = 500
TENANTS_PER_WRITE = 100
# Read without the snapshot (large, and only a step needs it) or columns an older table may lack.
_RUN_COLUMNS = (
    "pipeline_logging_id", "pipeline_id", "tenant_id", "provider", "domain", "template", "status",
    "trigger_type", "trigger_by", "parameters", "request_fingerprint", "idempotency_key", "error_message",
    "start_time", "end_time", "recorded_at", "seq",
)  # fmt: skip


def _columns(names: Sequence[str]) -> str:
    return ", ".join(quote_identifier(name) for name in names)


def _parts(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def matching_runs(
    wh: Warehouse, fingerprints: Mapping[str, str | None], *, idempotency_key: str | None
) -> dict[str, list[RunRecord]]:
    """Per tenant, the latest record of each of its runs with `idempotency_key`, or with its fingerprint and
    recorded within IN_FLIGHT_HORIZON (an identical run in flight), newest first.

    `fingerprints` maps each tenant to the request fingerprint of the run it is about to start (None: look
    for the idempotency key only). One query per TENANTS_PER_QUERY tenants; a tenant with no such run is absent.
    """
    tenants = [t for t, fp in fingerprints.items() if fp is not None or idempotency_key is not None]
    found: dict[str, list[RunRecord]] = {}
    for part in _parts(tenants, TENANTS_PER_QUERY):
        branches, params = [], {}
        for index, tenant in enumerate(part):
            conditions = []
            if idempotency_key is not None:
                conditions.append("idempotency_key = @key")
            if fingerprints[tenant] is not None:
                conditions.append(f"(request_fingerprint = @fp_{index} AND recorded_at >= @active_since)")
                params[f"fp_{index}"] = fingerprints[tenant]
            branches.append(
                f"SELECT {_columns(_RUN_COLUMNS)} FROM {table_ref(tenant, 'pipeline_runs')}"
                f" WHERE {' OR '.join(conditions)}"
            )
        if idempotency_key is not None:
            params["key"] = idempotency_key
        if any(fingerprints[tenant] is not None for tenant in part):
            params["active_since"] = utcnow() - IN_FLIGHT_HORIZON  # runs in flight: recent partitions only
        # The few matching records come back as they are; the latest of each run is picked here (a window
        # over the union costs DuckDB more than the scans themselves).
        latest: dict[tuple[str, str], RunRecord] = {}
        for row in wh.query(" UNION ALL ".join(branches), params):
            record = RunRecord.model_validate(row)
            key = (record.tenant_id, record.pipeline_logging_id)
            if key not in latest or record.seq > latest[key].seq:
                latest[key] = record
        for record in sorted(latest.values(), key=_newest_first):
            found.setdefault(record.tenant_id, []).append(record)
    return found


def _newest_first(record: RunRecord) -> tuple[float, int]:
    return (-(record.start_time.timestamp() if record.start_time else 0.0), -record.seq)


def _insert_statement(record: RunRecord) -> tuple[str, dict[str, Any]]:
    # NULL columns are left out (they default to NULL), so an older table without bulk_id takes a run without one.
    values = {name: value for name, value in record.row().items() if value is not None}
    names = list(values)
    sql = (
        f"INSERT INTO {table_ref(record.tenant_id, 'pipeline_runs')} ({_columns(names)})"
        f" VALUES ({', '.join(f'@{name}' for name in names)})"
    )
    return sql, values


def write_records(wh: Warehouse, records: Sequence[RunRecord]) -> None:
    """Append run records of many tenants (one each): one transaction per TENANTS_PER_WRITE of them.

    All of a transaction's records are written or none; a later group failing leaves the earlier ones,
    which a redelivery of the chunk then finds (by idempotency key) instead of starting them again. A group
    refused because a table predates a column (`common.metadata.table_upgrades`) is written again once its
    tables have the declaration's columns.
    """
    for start in range(0, len(records), TENANTS_PER_WRITE):
        group = records[start : start + TENANTS_PER_WRITE]
        statements = [_insert_statement(record) for record in group]
        try:
            wh.run_atomically(statements)
        except ConvergenceError:
            if not any(
                table_upgrades.add_missing_columns(wh, r.tenant_id, "tenant", "pipeline_runs") for r in group
            ):
                raise
            wh.run_atomically(statements)
