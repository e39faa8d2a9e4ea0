"""BigQuery encodings: typed query parameters, rows and Arrow data for load jobs, and DDL from table schemas.

Everything here is a pure function of its arguments (no client, no network), so the adapter in
common.warehouse.bigquery stays about jobs and errors, and these conversions can be tested on their own.
No value from a request is formatted into SQL here: values travel as query parameters or load-job payloads,
identifiers are quoted through common.warehouse.sql, and only the repository's schema descriptions become
DDL literals.
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
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from google.cloud import bigquery
from sqlglot import exp
from sqlglot.tokens import TokenType

from common.errors import BadRequest, ConfigurationError, TerminalError
from common.metadata.schemas import SchemaField, TableSchema
from common.warehouse.base import Params
from common.warehouse.sql import parameter_names, quote_identifier, table_ref

#: Tables the adapter creates for a moment (staging of replace loads, emulated-transaction snapshots).
INTERNAL_PREFIX = "_convergence_"


class QueryFailed(TerminalError):
    """The warehouse rejected a statement (a bug in a template or in the platform, not a caller's input)."""

    status = 500
    code = "query_failed"


# -- query parameters -----------------------------------------------------------------------------------

QueryParameter = bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter | bigquery.StructQueryParameter


def scalar_type(value: Any) -> str:
    """The GoogleSQL type of a Python scalar (a NULL is typed STRING, as BigQuery needs a type)."""
    if value is None:
        return "STRING"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, numbers.Integral):
        return "INT64"
    if isinstance(value, numbers.Real) and not isinstance(value, Decimal):
        return "FLOAT64"
    if isinstance(value, Decimal):
        digits = value.as_tuple()
        fits = len(digits.digits) <= 38 and isinstance(digits.exponent, int) and digits.exponent >= -9
        return "NUMERIC" if fits and abs(value) < Decimal("1e29") else "BIGNUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes | bytearray):
        return "BYTES"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"  # naive datetimes are taken as UTC, as the DuckDB adapter's UTC session does
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    raise QueryFailed(f"query parameter of unsupported type {type(value).__name__}")


def query_parameter(name: str | None, value: Any) -> QueryParameter:
    """A typed BigQuery query parameter for a Python value: scalars, lists (ARRAY) and dicts (STRUCT)."""
    if isinstance(value, Mapping):
        return bigquery.StructQueryParameter(name, *(query_parameter(k, v) for k, v in value.items()))
    if isinstance(value, list | tuple):
        if any(v is None for v in value):
            raise QueryFailed(f"query parameter {name}: BigQuery arrays cannot hold NULL")
        if any(isinstance(v, Mapping) for v in value):
            return bigquery.ArrayQueryParameter(name, "STRUCT", [query_parameter(None, v) for v in value])
        kinds = {scalar_type(v) for v in value}
        if kinds == {"INT64", "FLOAT64"}:
            kinds = {"FLOAT64"}
        if len(kinds) > 1:
            raise QueryFailed(f"query parameter {name} mixes element types {sorted(kinds)}")
        # An empty list has no element to type it by; STRING is as good a guess as any.
        return bigquery.ArrayQueryParameter(name, kinds.pop() if kinds else "STRING", list(value))
    return bigquery.ScalarQueryParameter(name, scalar_type(value), value)


def prepare(sql: str, params: Params | None, prefix: str = "") -> tuple[str, list[QueryParameter]]:
    """The statement and the typed parameters it references (and only those), named `prefix + name`.

    A parameter whose value is None becomes the literal NULL: a typed NULL parameter would fail BigQuery's
    type checks wherever the other side is not of that type (`amount = @n` with amount FLOAT64), while an
    untyped NULL fits every type, as in the DuckDB adapter. NULL is a keyword, not data, so no value is
    formatted into SQL.
    """
    wanted = parameter_names(sql)
    given = dict(params or {})
    missing = wanted - given.keys()
    if missing:
        raise QueryFailed(f"query parameters not supplied: {', '.join(sorted(missing))}")
    renames: dict[str, str] = {}
    bound: list[QueryParameter] = []
    for name in sorted(wanted):
        if given[name] is None:
            renames[name] = "NULL"
            continue
        if prefix:
            renames[name] = f"@{prefix}{name}"
        bound.append(query_parameter(prefix + name, given[name]))
    return (_substitute_parameters(sql, renames) if renames else sql), bound


def _substitute_parameters(sql: str, renames: Mapping[str, str]) -> str:
    """Replace each `@name` token (not text in strings or comments, which the tokenizer tells apart)."""
    tokens = tokenize(sql)
    pieces: list[str] = []
    cursor = 0
    for i, token in enumerate(tokens[:-1]):
        following = tokens[i + 1]
        if token.token_type != TokenType.PARAMETER or following.start != token.end + 1:
            continue
        if following.text not in renames:
            continue
        pieces += [sql[cursor : token.start], renames[following.text]]
        cursor = following.end + 1
    return "".join(pieces) + sql[cursor:]


@lru_cache(maxsize=1024)
def tokenize(sql: str) -> list[Any]:
    """The statement's BigQuery-dialect tokens (cached: the same templates run again and again)."""
    return sqlglot.Dialect.get_or_raise("bigquery").tokenize(sql)


# -- DDL from table schemas ------------------------------------------------------------------------------

_STANDARD = {
    "STRING": "STRING", "BYTES": "BYTES", "INTEGER": "INT64", "INT64": "INT64", "FLOAT": "FLOAT64",
    "FLOAT64": "FLOAT64", "NUMERIC": "NUMERIC", "BIGNUMERIC": "BIGNUMERIC", "BOOLEAN": "BOOL", "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP", "DATE": "DATE", "TIME": "TIME", "DATETIME": "DATETIME", "JSON": "JSON",
    "RECORD": "STRUCT", "STRUCT": "STRUCT", "GEOGRAPHY": "GEOGRAPHY",
}  # fmt: skip


def standard_type(kind: str) -> str:
    """A legacy or standard BigQuery type name in GoogleSQL spelling (INTEGER → INT64)."""
    try:
        return _STANDARD[kind.upper()]
    except KeyError:
        raise ConfigurationError(f"unknown BigQuery type {kind!r}") from None


def column_type(field: SchemaField) -> str:
    """A column's GoogleSQL type with nested names quoted, e.g. ARRAY<STRUCT<`key` STRING>>."""
    base = standard_type(field.type)
    if base == "STRUCT":
        base = f"STRUCT<{', '.join(_column(child, describe=False) for child in field.fields)}>"
    return f"ARRAY<{base}>" if field.mode == "REPEATED" else base


def _column(field: SchemaField, *, describe: bool = True) -> str:
    text = f"{quote_identifier(field.name)} {column_type(field)}"
    if field.mode == "REQUIRED":
        text += " NOT NULL"
    if describe and field.description:
        text += f" OPTIONS(description={_string_literal(field.description)})"
    return text


def _string_literal(text: str) -> str:
    # Descriptions come from configs/schemas (the repository), never from a request; DDL takes no parameters.
    return exp.Literal.string(text).sql("bigquery")


def partition_expression(schema: TableSchema) -> str | None:
    """The PARTITION BY expression of a table schema's time partitioning, or None."""
    spec = schema.time_partitioning
    if spec is None:
        return None
    if spec.field is None:  # ingestion-time partitioning
        return "_PARTITIONDATE" if spec.type == "DAY" else f"TIMESTAMP_TRUNC(_PARTITIONTIME, {spec.type})"
    by_name = {f.name: f for f in schema.fields}
    if spec.field not in by_name:
        raise ConfigurationError(f"table {schema.name}: partitioning field {spec.field!r} is not a column")
    column, kind = quote_identifier(spec.field), standard_type(by_name[spec.field].type)
    if kind == "DATE" and spec.type != "HOUR":
        return column if spec.type == "DAY" else f"DATE_TRUNC({column}, {spec.type})"
    if kind in ("TIMESTAMP", "DATETIME"):
        return f"{kind}_TRUNC({column}, {spec.type})"
    raise ConfigurationError(f"table {schema.name}: cannot partition by {spec.type} on a {kind} column")


def create_table_ddl(dataset: str, schema: TableSchema, *, replace: bool = False) -> str:
    """CREATE [OR REPLACE] TABLE with columns, NOT NULL, partitioning, clustering and descriptions."""
    lines = [
        f"CREATE {'OR REPLACE ' if replace else ''}TABLE {table_ref(dataset, schema.name)} (",
        ",\n".join(f"  {_column(field)}" for field in schema.fields),
        ")",
    ]
    partition = partition_expression(schema)
    if partition:
        lines.append(f"PARTITION BY {partition}")
    if schema.clustering and schema.clustering.fields:
        lines.append(f"CLUSTER BY {', '.join(quote_identifier(name) for name in schema.clustering.fields)}")
    if schema.description:
        lines.append(f"OPTIONS(description={_string_literal(schema.description)})")
    return "\n".join(lines)


# -- rows for load jobs ----------------------------------------------------------------------------------


class RowMismatch(ValueError):
    """A row that does not fit the table's schema."""


def ndjson_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[bigquery.SchemaField]) -> bytes:
    """Rows as newline-delimited JSON, checked against the table's schema first.

    The checks are as strict as the DuckDB adapter's Arrow conversion, and they run before anything is sent:
    a load job failed by BigQuery still counts against the table's daily load quota.
    """
    lines = []
    for number, row in enumerate(rows, start=1):
        try:
            lines.append(json.dumps(_record(row, fields, ""), ensure_ascii=False, allow_nan=False))
        except (RowMismatch, TypeError, ValueError) as exc:
            raise RowMismatch(f"row {number}: {exc}") from None
    return ("\n".join(lines) + "\n").encode()


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


# -- Arrow data for load jobs ----------------------------------------------------------------------------


def arrow_column_type(kind: pa.DataType, name: str) -> str:
    """The GoogleSQL type a column of Arrow data gets in a table created from that data."""
    if pa.types.is_dictionary(kind):
        return arrow_column_type(kind.value_type, name)
    if pa.types.is_boolean(kind):
        return "BOOL"
    if pa.types.is_integer(kind):
        return "INT64"
    if pa.types.is_floating(kind):
        return "FLOAT64"
    if pa.types.is_decimal(kind):
        return "NUMERIC" if kind.scale <= 9 and kind.precision - kind.scale <= 29 else "BIGNUMERIC"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return "STRING"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return "BYTES"
    if pa.types.is_date(kind):
        return "DATE"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP" if kind.tz else "DATETIME"
    if pa.types.is_time(kind):
        return "TIME"
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
    raise BadRequest(f"column {name}: Arrow type {kind} has no BigQuery counterpart", code="schema_mismatch")


def _arrow_type(field: bigquery.SchemaField) -> pa.DataType:
    kind = standard_type(field.field_type)
    if kind == "STRUCT":
        base: pa.DataType = pa.struct([pa.field(child.name, _arrow_type(child)) for child in field.fields])
    else:
        base = {
            "STRING": pa.string(), "INT64": pa.int64(), "FLOAT64": pa.float64(), "BOOL": pa.bool_(),
            "NUMERIC": pa.decimal128(38, 9), "BIGNUMERIC": pa.decimal256(76, 38), "DATE": pa.date32(),
            "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATETIME": pa.timestamp("us"), "TIME": pa.time64("us"),
            "BYTES": pa.binary(),
        }.get(kind, pa.string())  # fmt: skip
    return pa.list_(base) if field.mode == "REPEATED" else base


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
