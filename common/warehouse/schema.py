"""Table definitions in BigQuery's JSON schema format: what the Warehouse port creates tables from.

Also the one mapping between these definitions and Arrow: the Arrow type each column's values take in a
load (`SchemaField.arrow_type`), and the definition of a table read back from its Arrow schema
(`schema_from_arrow`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from common.errors import ConfigurationError
from common.types import ColumnName

_LEGACY_TO_STANDARD = {
    "STRING": "STRING", "BYTES": "BYTES", "INTEGER": "INT64", "INT64": "INT64", "FLOAT": "FLOAT64",
    "FLOAT64": "FLOAT64", "NUMERIC": "NUMERIC", "BIGNUMERIC": "BIGNUMERIC", "BOOLEAN": "BOOL", "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP", "DATE": "DATE", "TIME": "TIME", "DATETIME": "DATETIME", "JSON": "JSON",
    "RECORD": "STRUCT", "STRUCT": "STRUCT",
}  # fmt: skip


class SchemaField(BaseModel):
    """One column, as in a BigQuery JSON schema."""

    model_config = ConfigDict(extra="ignore")

    name: ColumnName
    type: str
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"] = "NULLABLE"
    description: str = ""
    fields: list[SchemaField] = Field(default_factory=list)

    def standard_sql_type(self) -> str:
        """The column's type in GoogleSQL DDL, e.g. ARRAY<STRUCT<key STRING, value STRING>>."""
        base = _LEGACY_TO_STANDARD.get(self.type.upper())
        if base is None:
            raise ConfigurationError(f"unknown BigQuery type {self.type!r} for column {self.name!r}")
        if base == "STRUCT":
            inner = ", ".join(f"{child.name} {child.standard_sql_type()}" for child in self.fields)
            base = f"STRUCT<{inner}>"
        if base == "NUMERIC":
            base = "NUMERIC(38, 9)"
        return f"ARRAY<{base}>" if self.mode == "REPEATED" else base

    def base_type(self) -> str:
        """The GoogleSQL name of one value's type, without ARRAY or parameters: INT64, STRUCT, TIMESTAMP."""
        base = _LEGACY_TO_STANDARD.get(self.type.upper())
        if base is None:
            raise ConfigurationError(f"unknown BigQuery type {self.type!r} for column {self.name!r}")
        return base

    def arrow_type(self) -> pa.DataType:
        """The Arrow type of the column's values in a load: TIMESTAMP is UTC microseconds, NUMERIC decimal."""
        base = self.base_type()
        if base == "STRUCT":
            kind = pa.struct([pa.field(child.name, child.arrow_type()) for child in self.fields])
        else:
            kind = _ARROW_TYPES[base]
        return pa.list_(kind) if self.mode == "REPEATED" else kind

    def signature(self) -> str:
        """The column's type with nested names and without precision, to compare two definitions by."""
        base = self.base_type()
        if base == "STRUCT":
            base = f"STRUCT<{', '.join(f'{child.name} {child.signature()}' for child in self.fields)}>"
        return f"ARRAY<{base}>" if self.mode == "REPEATED" else base


_ARROW_TYPES: dict[str, pa.DataType] = {
    "STRING": pa.string(), "BYTES": pa.binary(), "INT64": pa.int64(), "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9), "BIGNUMERIC": pa.decimal256(76, 38), "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATE": pa.date32(), "TIME": pa.time64("us"),
    "DATETIME": pa.timestamp("us"), "JSON": pa.string(),
}  # fmt: skip


def type_of_arrow(kind: pa.DataType, column: str) -> str:
    """The BigQuery type of one Arrow value type (not a list), as a table created from such data has it."""
    if pa.types.is_dictionary(kind):
        return type_of_arrow(kind.value_type, column)
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
        return "STRUCT"
    raise ConfigurationError(f"column {column} has type {kind}, which has no BigQuery counterpart")


def field_from_arrow(
    name: str, kind: pa.DataType, *, required: bool = False, json: bool = False
) -> SchemaField:
    """The definition of a column holding Arrow values of `kind` (a list is REPEATED; `json` marks JSON text).

    Names are taken as the warehouse reports them, unchecked: a table's nested names may be any the data had.
    """
    mode: Literal["NULLABLE", "REQUIRED", "REPEATED"] = "REQUIRED" if required else "NULLABLE"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if pa.types.is_list(kind.value_type) or pa.types.is_large_list(kind.value_type):
            raise ConfigurationError(f"column {name} is a list of lists, which BigQuery has no type for")
        kind, mode = kind.value_type, "REPEATED"
    base = "JSON" if json else type_of_arrow(kind, name)
    children = (
        [field_from_arrow(kind.field(i).name, kind.field(i).type) for i in range(kind.num_fields)]
        if base == "STRUCT"
        else []
    )
    return SchemaField.model_construct(name=name, type=base, mode=mode, description="", fields=children)


def schema_from_arrow(
    name: str, schema: pa.Schema, *, required: Collection[str] = (), json: Collection[str] = ()
) -> TableSchema:
    """The definition of an existing table from its Arrow schema (`required` and `json` name columns)."""
    fields = [
        field_from_arrow(f.name, f.type, required=f.name in required, json=f.name in json) for f in schema
    ]
    return TableSchema(name=name, fields=fields)


class TimePartitioning(BaseModel):
    type: Literal["HOUR", "DAY", "MONTH", "YEAR"] = "DAY"
    field: str | None = None


class Clustering(BaseModel):
    fields: list[str] = Field(default_factory=list, max_length=4)


class TableSchema(BaseModel):
    """A table definition: columns plus partitioning and clustering."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str = ""
    description: str = ""
    fields: list[SchemaField]
    time_partitioning: TimePartitioning | None = Field(None, alias="timePartitioning")
    clustering: Clustering | None = None

    @property
    def column_names(self) -> list[str]:
        return [f.name for f in self.fields]
