"""Tables created by an older release gain the nullable columns their declaration has added since.

A tenant's pipeline_runs and step_logs are created at onboarding and never recreated, so a release that
declares a new column (step_logs.bytes_processed, pipeline_runs.bulk_id) meets tables without it. Rather than
a migration that must reach every tenant before the new code runs, the writer upgrades a table when the
warehouse refuses a row for a column the table lacks: it adds the declaration's missing columns
(`ALTER TABLE ... ADD COLUMN IF NOT EXISTS`, idempotent, so instances racing to do it agree) and writes the
row again. A table that is current costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from common.errors import BadRequest, ConfigurationError
from common.metadata.schemas import load_schema
from common.warehouse.base import Warehouse
from common.warehouse.sql import quote_identifier, table_ref


def add_missing_columns(
    wh: Warehouse, dataset: str, scope: Literal["control", "tenant"], table: str
) -> list[str]:
    """Add to `dataset.table` the columns its declaration has and it lacks; the names added."""
    present = {name.lower() for name in wh.table_columns(dataset, table)}
    missing = [f for f in load_schema(scope, table).fields if f.name.lower() not in present]
    required = [f.name for f in missing if f.mode == "REQUIRED"]
    if required:
        raise ConfigurationError(
            f"{dataset}.{table} lacks the REQUIRED columns {', '.join(required)}; it cannot be upgraded in place"
        )
    for field in missing:
        wh.execute(
            f"ALTER TABLE {table_ref(dataset, table)} ADD COLUMN IF NOT EXISTS"
            f" {quote_identifier(field.name)} {field.standard_sql_type()}"
        )
    return [f.name for f in missing]


def insert_rows(
    wh: Warehouse,
    dataset: str,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    scope: Literal["control", "tenant"] = "tenant",
) -> int:
    """Insert rows of a declared table, upgrading a table of an older release first when it needs to."""
    try:
        return wh.insert_rows(dataset, table, rows)
    except BadRequest as exc:
        if exc.code != "unknown_columns":
            raise
    add_missing_columns(wh, dataset, scope, table)
    return wh.insert_rows(dataset, table, rows)
