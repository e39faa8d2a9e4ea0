"""BigQuery encodings of data: rows as NDJSON and Arrow tables for load jobs, fitted to a table's schema.

Everything here is a pure function of its arguments (no client, no network), so the adapter in
common.warehouse.bigquery stays about jobs and errors, and these conversions can be tested on their own.
Query parameters are in common.warehouse.bigquery_params, DDL in common.warehouse.bigquery_ddl.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.cloud import bigquery

from common.errors import BadRequest, ConfigurationError
from common.warehouse.base import INTERNAL_PREFIX
from common.warehouse.bigquery_ddl import standard_type
from common.warehouse.schema import SchemaField, TableSchema, type_of_arrow
from common.warehouse.sql import quote_identifier

# INTERNAL_PREFIX is the port's; the adapter's modules take it from here with the rest.
__all__ = [
    "INTERNAL_PREFIX",
    "RowMismatch",
    "arrow_column_type",
    "fit_to_table",
    "ndjson_rows",
    "parquet_bytes",
    "plain_arrow",
    "table_definition",
]

# -- rows for load jobs ----------------------------------------------------------------------------------


class RowMismatch(ValueError):
    """A row that does not fit the table's schema."""


def ndjson_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[bigquery.SchemaField]) -> bytes:
    """Rows as newline-delimited JSON, checked against the table's schema first.

    The checks are as strict as the DuckDB adapter's Arrow conversion, and they run before anything is sent:
    a load job failed by BigQuery still counts against the table's daily load quota.
    """
    lines = []
    for number, record in enumerate(checked_rows(rows, fields), start=1):
        try:
            lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise RowMismatch(f"row {number}: {exc}") from None
    return ("\n".join(lines) + "\n").encode()


def checked_rows(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[bigquery.SchemaField]
) -> list[dict[str, Any]]:
    """Each row checked against the table's schema (RowMismatch naming the row), its values encoded."""
    records = []
    for number, row in enumerate(rows, start=1):
        try:
            records.append(_record(row, fields, ""))
        except (RowMismatch, TypeError, ValueError) as exc:
            raise RowMismatch(f"row {number}: {exc}") from None
    return records


def _record(row: Mapping[str, Any], fields: Sequence[bigquery.SchemaField], path: str) -> dict[str, Any]:
    known = {field.name: field for field in fields}
    unknown = sorted(set(row) - known.keys())
    if unknown:
        raise RowMismatch(f"unknown columns {', '.join(path + name for name in unknown)}")
    out: dict[str, Any] = {}
    for name, field in known.items():
        value = row.get(name)
        if field.mode == "REPEATED":
            if value is None:
                continue  # BigQuery has no NULL arrays: a missing array is an empty one
            if not isinstance(value, list | tuple):
                raise RowMismatch(f"{path}{name} must be a list, got {type(value).__name__}")
            out[name] = [_value(item, field, f"{path}{name}[{i}]") for i, item in enumerate(value)]
        elif value is None:
            if field.mode == "REQUIRED":
                raise RowMismatch(f"{path}{name} is required")
        else:
            out[name] = _value(value, field, path + name)
    return out


def _value(value: Any, field: bigquery.SchemaField, path: str) -> Any:
    kind = standard_type(field.field_type)
    if value is None:
        raise RowMismatch(f"{path} is NULL, which BigQuery does not allow in an array")
    if kind == "STRUCT":
        if not isinstance(value, Mapping):
            raise RowMismatch(f"{path} must be an object, got {type(value).__name__}")
        return _record(value, field.fields, path + ".")
    encode = _ENCODERS.get(kind)
    encoded = encode(value) if encode else None
    if encoded is None:
        raise RowMismatch(f"{path} expects {kind}, got {type(value).__name__} {value!r:.40}")
    return encoded


def _float(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _decimal(value: Any) -> str | None:
    # As text, so no digit is lost to a JSON float on the way.
    return str(value) if isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool) else None


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, dt.datetime):
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat()


def _json(value: Any) -> Any:
    # A str is JSON text (as DuckDB's JSON type takes it); anything else is the value itself.
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def _datetime(value: Any) -> str | None:
    if not isinstance(value, dt.datetime):
        return None
    return (value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value).isoformat()


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "STRING": lambda v: v if isinstance(v, str) else None,
    "INT64": lambda v: int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else None,
    "FLOAT64": _float,
    "NUMERIC": _decimal,
    "BIGNUMERIC": _decimal,
    "BOOL": lambda v: v if isinstance(v, bool) else None,
    "DATE": lambda v: v.isoformat() if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else None,
    "TIMESTAMP": _timestamp,
    "DATETIME": _datetime,
    "TIME": lambda v: v.isoformat() if isinstance(v, dt.time) else None,
    "BYTES": lambda v: base64.b64encode(v).decode() if isinstance(v, bytes | bytearray) else None,
    "JSON": _json,
    "GEOGRAPHY": lambda v: v if isinstance(v, str) else None,
}


# -- table definitions -----------------------------------------------------------------------------------


def table_definition(name: str, fields: Sequence[bigquery.SchemaField]) -> TableSchema:
    """A BigQuery table's schema as the platform's table definition (names as BigQuery reports them)."""
    return TableSchema(name=name, fields=[_definition(field) for field in fields])


def _definition(field: bigquery.SchemaField) -> SchemaField:
    return SchemaField.model_construct(
        name=field.name,
        type=standard_type(field.field_type),
        mode=field.mode or "NULLABLE",
        description=field.description or "",
        fields=[_definition(child) for child in field.fields],
    )


# -- Arrow data for load jobs ----------------------------------------------------------------------------


def arrow_column_type(kind: pa.DataType, name: str) -> str:
    """The GoogleSQL type a column of Arrow data gets in a table created from that data."""
    if pa.types.is_dictionary(kind):
        return arrow_column_type(kind.value_type, name)
    if pa.types.is_struct(kind):
        inner = ", ".join(
            f"{quote_identifier(kind.field(i).name)} {arrow_column_type(kind.field(i).type, name)}"
            for i in range(kind.num_fields)
        )
        return f"STRUCT<{inner}>"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if pa.types.is_list(kind.value_type) or pa.types.is_large_list(kind.value_type):
            raise BadRequest(f"column {name}: BigQuery has no arrays of arrays", code="schema_mismatch")
        return f"ARRAY<{arrow_column_type(kind.value_type, name)}>"
    try:
        return type_of_arrow(kind, name)
    except ConfigurationError:
        raise BadRequest(
            f"column {name}: Arrow type {kind} has no BigQuery counterpart", code="schema_mismatch"
        ) from None


def _arrow_type(field: bigquery.SchemaField) -> pa.DataType:
    """The Arrow type of a BigQuery column's values; text for a type loads cannot carry (GEOGRAPHY, ...)."""
    try:
        return _definition(field).arrow_type()
    except (ConfigurationError, KeyError, ValueError):
        return pa.string()


def plain_arrow(data: pa.Table) -> pa.Table:
    """Decode dictionary columns and give all-NULL columns a type BigQuery has."""
    columns = []
    for column in data.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=data.column_names)


def fit_to_table(data: pa.Table, fields: Sequence[bigquery.SchemaField]) -> pa.Table:
    """The data's columns in the table's order, NULL for the table's columns the data lacks.

    Columns are matched by name (as BigQuery does for Parquet); a column the table lacks is refused.
    """
    names = [field.name for field in fields]
    unknown = [name for name in data.column_names if name not in names]
    if unknown:
        raise BadRequest(f"columns not in the table: {', '.join(unknown)}", code="schema_mismatch")
    columns = [
        data.column(field.name)
        if field.name in data.column_names
        else pa.nulls(data.num_rows, _arrow_type(field))
        for field in fields
    ]
    return pa.table(columns, names=names)


def parquet_bytes(data: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(data, buffer, coerce_timestamps="us", allow_truncated_timestamps=True)
    return buffer.getvalue()
