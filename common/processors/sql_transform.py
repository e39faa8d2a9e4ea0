"""sql.transform: a SELECT (GoogleSQL, run by whichever warehouse is in use) written into a tenant table.

It was first named for BigQuery; `gcp.bq_etl` and `gcp.bigquery_to_bigquery` stay aliases, so templates
written with those names run unchanged. Idempotent by construction: `replace_partition` deletes the
partition it is about to write in the same transaction, so a redelivered or re-run step leaves the table
as one run would.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from common.errors import ConfigurationError
from common.metadata.reference import REFERENCE_DIR, load_reference_table
from common.metadata.schemas import load_schema, schema_names
from common.processors.registry import StepContext, StepResult, processor
from common.types import (
    ColumnName,
    TableName,
    VariableName,
)
from common.warehouse.sql import quote_identifier, table_ref


class Destination(BaseModel):
    """The table a transform writes and how it replaces what an earlier run wrote."""

    model_config = ConfigDict(extra="forbid")

    table: TableName
    schema_name: TableName | None = Field(None, alias="schema")
    write_mode: Literal["replace_partition", "replace_where", "truncate", "append"] = "replace_partition"
    partition_column: ColumnName | None = None
    partition_value: VariableName = Field(
        "date", description="variable naming the partition"
    )
    replace_where: str | None = Field(
        None,
        description="replace_where: the template's condition (values as @params) of the rows a run replaces",
    )

    @model_validator(mode="after")
    def _write_mode_has_what_it_needs(self) -> Destination:
        if (self.write_mode == "replace_where") != bool(self.replace_where):
            raise ValueError(
                "replace_where (the condition) goes with write_mode: replace_where, and only with it"
            )
        if self.write_mode == "replace_partition" and not self.partition_column:
            raise ValueError("write_mode replace_partition needs partition_column")
        _require_schemas([self.schema_name or self.table])
        return self


def _require_schemas(tables: list[str]) -> list[str]:
    """`tables`, each having a tenant schema in configs/schemas/tenant/ (else a ValueError naming one)."""
    missing = [t for t in tables if t not in schema_names("tenant")]
    if missing:
        raise ValueError(f"no schema configs/schemas/tenant/{missing[0]}.json (name one with `schema`)")
    return tables


class TransformConfig(BaseModel):
    """A sql.transform step as written in a template."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1)
    destination: Destination
    source_tables: list[str] = Field(
        default_factory=list, description="tenant tables created empty if absent"
    )
    reference_tables: list[str] = Field(
        default_factory=list,
        description="platform reference tables (configs/reference/*.csv) loaded into the dataset",
    )

    @field_validator("source_tables")
    @classmethod
    def _sources_have_schemas(cls, value: list[str]) -> list[str]:
        return _require_schemas(value)

    @field_validator("reference_tables")
    @classmethod
    def _references_are_shipped(cls, value: list[str]) -> list[str]:
        missing = [name for name in value if not (REFERENCE_DIR / f"{name}.csv").is_file()]
        if missing:
            raise ValueError(f"no reference table configs/reference/{missing[0]}.csv")
        return value


@processor("sql.transform", "gcp.bq_etl", "gcp.bigquery_to_bigquery", config=TransformConfig)
def run_transform(ctx: StepContext, config: TransformConfig) -> StepResult:
    """Create the tables the SQL reads and writes, then replace the destination's rows in one transaction."""
    wh, dataset, dest = ctx.warehouse, ctx.tenant_id, config.destination
    for source in config.source_tables:
        wh.create_table(dataset, load_schema("tenant", source))
    for reference in config.reference_tables:
        load_reference_table(wh, dataset, reference)
    schema = load_schema("tenant", dest.schema_name or dest.table).model_copy(update={"name": dest.table})
    wh.create_table(dataset, schema)

    params = ctx.params
    target = table_ref(dataset, dest.table)
    columns = ", ".join(quote_identifier(c) for c in schema.column_names)
    statements: list[tuple[str, dict | None]] = []
    if dest.write_mode == "replace_partition":
        if not dest.partition_column or dest.partition_value not in params:
            raise ConfigurationError(
                f"step {ctx.step.step_id}: replace_partition needs partition_column and a variable"
            )
        statements.append(
            (
                f"DELETE FROM {target} WHERE {quote_identifier(dest.partition_column)} = @{dest.partition_value}",
                params,
            )
        )
    elif dest.write_mode == "replace_where":
        statements.append((f"DELETE FROM {target} WHERE {dest.replace_where}", params))
    elif dest.write_mode == "truncate":
        statements.append((f"DELETE FROM {target} WHERE TRUE", None))
    statements.append(
        (
            f"INSERT INTO {target} ({columns}) SELECT {columns} FROM ({config.sql.rstrip().rstrip(';')})",
            params,
        )
    )
    counts = wh.run_atomically(statements)
    return StepResult(rows_processed=counts[-1], details={"table": dest.table, "write_mode": dest.write_mode})
