"""A provider's load step without an integration: the rows the tenant uploaded itself stand in for the load.

Every cost template starts with a step that loads the provider's data into a raw table of the tenant
(gcp.billing_export, openai.costs, anthropic.costs, source.files). A tenant may instead upload that table's
rows (POST /api/v1/data/{org}/uploads/{table}). When the tenant has no integration for the provider, the
load step keeps what is in the table for the run's period and the rest of the template runs on it; when the
table holds nothing for the period either, the run fails with one message naming both ways to provide it.
"""

from __future__ import annotations

from typing import Any

from common.errors import TerminalError
from common.processors.registry import StepContext, StepResult
from common.warehouse.sql import table_ref


class NoSourceData(TerminalError):
    """Neither an integration nor uploaded rows provide the period's data (422)."""

    status = 422
    code = "no_source_data"


def period_rows(ctx: StepContext, table: str, where: str | None) -> int:
    """Rows of the tenant's `table` that `where` (a predicate using the run's variables) keeps."""
    if not ctx.warehouse.table_exists(ctx.tenant_id, table):
        return 0
    predicate = f"({where})" if where else "TRUE"
    sql = f"SELECT COUNT(*) AS n FROM {table_ref(ctx.tenant_id, table)} WHERE {predicate}"
    return int(ctx.warehouse.query(sql, dict(ctx.params))[0]["n"] or 0)


def integration_setup(tenant: str, provider: str) -> str:
    """How a tenant sets up `provider`'s integration, as a refusal says it."""
    return f"set up the {provider} integration (POST /api/v1/integrations/{tenant}/{provider}/setup)"


def use_uploaded_rows(
    ctx: StepContext, *, table: str, where: str | None, period: str, missing: str, instead: str
) -> StepResult:
    """The step's result when it has nothing to load from (`missing` says what): its uploaded rows of the period.

    Raises NoSourceData, naming both ways to provide the data (`instead`, and an upload into `table`), when
    the table holds none.
    """
    rows = period_rows(ctx, table, where)
    if rows == 0:
        tenant = ctx.tenant_id
        raise NoSourceData(
            f"{tenant} has {missing} and {table} holds no rows for {period}: {instead}, or upload the data"
            f" (POST /api/v1/data/{tenant}/uploads/{table})"
        )
    details: dict[str, Any] = {"table": table, "source": "uploaded", "period": period}
    return StepResult(rows_processed=rows, details=details)
