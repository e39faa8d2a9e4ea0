"""Table definitions in BigQuery's JSON schema format: what the Warehouse port creates tables from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from common.errors import ConfigurationError
from common.types import ColumnName

_LEGACY_TO_STANDARD = {
    "STRING": "STRING", "BYTES": "BYTES", "INTEGER": "INT64", "INT64": "INT64", "FLOAT": "FLOAT64",
    "FLOAT64": "FLOAT64", "NUMERIC": "NUMERIC", "BIGNUMERIC": "BIGNUMERIC", "BOOLEAN": "BOOL", "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP", "DATE": "DATE", "TIME": "TIME", "DATETIME": "DATETIME", "JSON": "JSON",
    "RECORD": "STRUCT", "STRUCT": "STRUCT",
}


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
