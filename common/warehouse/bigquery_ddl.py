"""GoogleSQL DDL from the repository's table schemas: columns, NOT NULL, partitioning, clustering.

Identifiers are quoted through common.warehouse.sql; only the schemas' own descriptions become literals.
"""

from __future__ import annotations

from sqlglot import exp

from common.errors import ConfigurationError
from common.warehouse.schema import SchemaField, TableSchema
from common.warehouse.sql import quote_identifier, table_ref

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


