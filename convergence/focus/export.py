"""Write a tenant's focus_costs as a FOCUS dataset file (Parquet keeps every column's type; CSV for people)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from common.metadata.schemas import SchemaField, load_schema
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

FOCUS_TABLE = "focus_costs"
_ARROW_TYPES = {
    "STRING": pa.string(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "INTEGER": pa.int64(),
}


def _arrow_field(field: SchemaField) -> pa.Field:
    return pa.field(field.name, _ARROW_TYPES[field.type.upper()], nullable=field.mode != "REQUIRED")


def focus_arrow_table(wh: Warehouse, tenant_id: str, *, sources: list[str] | None = None) -> pa.Table:
    """The tenant's focus_costs (optionally only some x_Source values) as an Arrow table of FOCUS types."""
    schema = load_schema("tenant", FOCUS_TABLE)
    arrow_schema = pa.schema([_arrow_field(f) for f in schema.fields])
    if not wh.table_exists(tenant_id, FOCUS_TABLE):
        return arrow_schema.empty_table()
    where, params = "TRUE", {}
    if sources:
        where, params = "x_Source IN UNNEST(@sources)", {"sources": list(sources)}
    rows = wh.query(
        f"SELECT * FROM {table_ref(tenant_id, FOCUS_TABLE)} WHERE {where} ORDER BY ChargePeriodStart, x_Source",
        params,
    )
    columns = {name: [row.get(name) for row in rows] for name in schema.column_names}
    for name, values in columns.items():
        if arrow_schema.field(name).type == pa.timestamp("us", tz="UTC"):
            columns[name] = [v.astimezone(dt.UTC) if isinstance(v, dt.datetime) else v for v in values]
    return pa.table(columns, schema=arrow_schema)


def write_focus_file(table: pa.Table, path: Path) -> Path:
    """Write Parquet for a .parquet path, else CSV with ISO 8601 UTC timestamps (YYYY-MM-DDTHH:MM:SSZ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
        return path
    converted = []
    for column, field in zip(table.columns, table.schema, strict=True):
        if pa.types.is_timestamp(field.type):
            text = [v.strftime("%Y-%m-%dT%H:%M:%SZ") if v is not None else None for v in column.to_pylist()]
            converted.append(pa.array(text, pa.string()))
        else:
            converted.append(column)
    pa_csv.write_csv(pa.table(converted, names=table.column_names), path)
    return path
