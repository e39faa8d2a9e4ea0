"""gcp.bq_etl (alias gcp.bigquery_to_bigquery): a GoogleSQL SELECT written into a tenant table.

Idempotent by construction: `replace_partition` deletes the partition it is about to write in the same
transaction, so a redelivered or re-run step leaves the table as one run would.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.errors import ConfigurationError
from common.metadata.reference import load_reference_table
from common.metadata.schemas import load_schema
from common.processors.registry import StepContext, StepResult, processor
from common.warehouse.sql import quote_identifier, table_ref

IDENT = r"^[a-z][a-z0-9_]{0,63}$"


class Destination(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: str = Field(pattern=IDENT)
    schema_name: str | None = Field(None, alias="schema", pattern=IDENT)
    write_mode: Literal["replace_partition", "replace_where", "truncate", "append"] = "replace_partition"
    partition_column: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,299}$")
    partition_value: str = Field(
        "date", pattern=r"^[a-z_][a-z0-9_]*$", description="variable naming the partition"
    )
    replace_where: str | None = Field(
        None,
        description="replace_where: the template's condition (values as @params) of the rows a run replaces",
    )

    @model_validator(mode="after")
    def _replace_where_needs_condition(self) -> Destination:
        if (self.write_mode == "replace_where") != bool(self.replace_where):
            raise ValueError(
                "replace_where (the condition) goes with write_mode: replace_where, and only with it"
            )
        return self


class EtlConfig(BaseModel):
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


@processor("gcp.bq_etl", "gcp.bigquery_to_bigquery")
def run_etl(ctx: StepContext) -> StepResult:
    config = EtlConfig.model_validate(ctx.config)
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
