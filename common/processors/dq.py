"""dq.checks: data-quality checks on a tenant table; results land in `dq_results`.

A failed check of severity `error` fails the step (after its results are written); `warn` only records.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.errors import StepFailed
from common.metadata.schemas import load_schema
from common.processors.reconcile import reconcile
from common.processors.registry import StepContext, StepResult, processor
from common.types import COLUMN_NAME_PATTERN, ColumnName, TableName, utcnow
from common.warehouse.sql import quote_identifier, table_ref

COLUMN = COLUMN_NAME_PATTERN


class Check(BaseModel):
    """One data-quality check; `type` says which of the other fields it needs."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.\-]{1,100}$")
    type: Literal["not_null", "unique", "row_count", "accepted_values", "expression", "reconcile"]
    column: ColumnName | None = None
    columns: list[str] = Field(default_factory=list)
    values: list[Any] = Field(default_factory=list)
    min: int | None = None
    max: int | None = None
    expression: str | None = None
    source: str | None = Field(
        None, description="reconcile: SELECT of key columns and `total` from the source"
    )
    target: str | None = Field(None, description="reconcile: the same keys and `total` from the output")
    tolerance: float = Field(1e-6, ge=0, le=1, description="reconcile: largest relative difference accepted")
    severity: Literal["error", "warn"] = "error"

    @model_validator(mode="after")
    def _needs(self) -> Check:
        import re

        if self.type in ("not_null", "accepted_values") and not self.column:
            raise ValueError(f"{self.type} needs `column`")
        if self.type == "unique" and not (self.columns or self.column):
            raise ValueError("unique needs `column` or `columns`")
        if any(not re.fullmatch(COLUMN, c) for c in self.columns):
            raise ValueError("columns must be plain column names")
        if self.type == "accepted_values" and not self.values:
            raise ValueError("accepted_values needs `values`")
        if self.type == "expression" and not self.expression:
            raise ValueError("expression needs `expression`")
        if self.type == "row_count" and self.min is None and self.max is None:
            raise ValueError("row_count needs `min` or `max`")
        if self.type == "reconcile" and not (self.source and self.target):
            raise ValueError("reconcile needs `source` and `target` queries")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.type}_{self.column or '_'.join(self.columns) or 'table'}"


class DqConfig(BaseModel):
    """A dq.checks step as written in a template: the table, an optional row filter, the checks."""

    model_config = ConfigDict(extra="forbid")

    table: TableName
    where: str | None = None
    checks: list[Check] = Field(min_length=1)


def _failures(ctx: StepContext, config: DqConfig, check: Check) -> tuple[int, str]:
    """(number of failing rows, observed value) for one check."""
    source = table_ref(ctx.tenant_id, config.table)
    where = f"({config.where})" if config.where else "TRUE"
    params = dict(ctx.params)
    if check.type == "reconcile":
        return reconcile(ctx.warehouse, check.source or "", check.target or "", params, check.tolerance)
    if check.type == "not_null":
        sql = f"SELECT COUNT(*) AS n FROM {source} WHERE {where} AND {quote_identifier(check.column)} IS NULL"
    elif check.type == "unique":
        cols = ", ".join(quote_identifier(c) for c in (check.columns or [check.column]))
        sql = (
            f"SELECT COALESCE(SUM(c), 0) AS n FROM (SELECT COUNT(*) AS c FROM {source} WHERE {where}"
            f" GROUP BY {cols} HAVING COUNT(*) > 1)"
        )
    elif check.type == "accepted_values":
        params["_accepted_values"] = [str(v) for v in check.values]
        sql = (
            f"SELECT COUNT(*) AS n FROM {source} WHERE {where} AND {quote_identifier(check.column)} IS NOT NULL"
            f" AND CAST({quote_identifier(check.column)} AS STRING) NOT IN UNNEST(@_accepted_values)"
        )
    elif check.type == "expression":
        sql = f"SELECT COUNT(*) AS n FROM {source} WHERE {where} AND ({check.expression}) IS NOT TRUE"
    else:
        count = int(ctx.warehouse.query(f"SELECT COUNT(*) AS n FROM {source} WHERE {where}", params)[0]["n"])
        too_few = check.min is not None and count < check.min
        too_many = check.max is not None and count > check.max
        return (1 if too_few or too_many else 0), str(count)
    n = int(ctx.warehouse.query(sql, params)[0]["n"] or 0)
    return n, str(n)


@processor("dq.checks", config=DqConfig)
def run_checks(ctx: StepContext, config: DqConfig) -> StepResult:
    """Run every check, replace this step's rows of dq_results with their outcomes, fail on an error."""
    ctx.warehouse.create_table(ctx.tenant_id, load_schema("tenant", "dq_results"))
    now = utcnow()
    results = []
    for check in config.checks:
        failed, observed = _failures(ctx, config, check)
        results.append(
            {
                "pipeline_logging_id": ctx.run_id,
                "step_id": ctx.step.step_id,
                "check_name": check.label,
                "check_type": check.type,
                "table_name": config.table,
                "column_name": check.column or (",".join(check.columns) or None),
                "severity": check.severity,
                "status": "FAIL" if failed else "PASS",
                "failed_rows": failed,
                "observed_value": observed,
                "message": f"{check.label}: {failed} failing" if failed else f"{check.label}: ok",
                "checked_at": now,
            }
        )
    ctx.warehouse.execute(
        f"DELETE FROM {table_ref(ctx.tenant_id, 'dq_results')} WHERE pipeline_logging_id = @run AND step_id = @step",
        {"run": ctx.run_id, "step": ctx.step.step_id},
    )
    ctx.warehouse.insert_rows(ctx.tenant_id, "dq_results", results)
    errors = [r for r in results if r["status"] == "FAIL" and r["severity"] == "error"]
    if errors:
        detail = "; ".join(
            f"{r['check_name']} ({r['check_type']}) observed {r['observed_value']}" for r in errors
        )
        raise StepFailed(f"data-quality checks failed on {config.table}: {detail}", code="dq_failed")
    warnings = sum(1 for r in results if r["status"] == "FAIL")
    return StepResult(rows_processed=len(results), details={"checks": len(results), "warnings": warnings})
