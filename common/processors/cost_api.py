"""What the steps loading a provider's cost API share: one UTC day into the tenant's raw table.

A provider's step (openai.costs, anthropic.costs, in its provider package) gives its config model (a
`CostApiConfig` naming its raw table), how to build its API client and how to fetch one day. The tenant's
admin key is decrypted here, inside the step, and lives only as long as the request. The day's rows replace
whatever an earlier run loaded for that day in one transaction (DELETE of the day, INSERT of the rows), so
a redelivered or repeated step leaves one copy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from common.errors import ConfigurationError
from common.metadata.integrations import Integration, IntegrationMissing, read_integration
from common.metadata.schemas import load_schema, schema_names
from common.processors.registry import StepContext, StepResult
from common.processors.uploaded import integration_setup, use_uploaded_rows
from common.sources.cost_window import CostFetch, CostWindow
from common.sources.provider_http import ProviderApi
from common.types import TableName, utcnow
from common.warehouse.sql import quote_identifier, table_ref

ROWS_PER_STATEMENT = 500  # keeps each INSERT's parameter well under BigQuery's request size limit

FetchDay = Callable[[ProviderApi, CostWindow, Integration], CostFetch]
MakeApi = Callable[..., ProviderApi]


class CostApiConfig(BaseModel):
    """A cost-API step's config: the raw table to replace the day in (default: the provider's raw table).

    Subclasses set `raw_schema` (the schema the table is created from) and the `table` default to it.
    """

    model_config = ConfigDict(extra="forbid")
    raw_schema: ClassVar[str]

    table: TableName

    @field_validator("table")
    @classmethod
    def _not_a_platform_table(cls, value: str) -> str:
        if value != cls.raw_schema and value in schema_names("tenant"):
            raise ValueError(f"{value} is a platform table, not a raw cost table")
        return value


def _window(ctx: StepContext) -> CostWindow:
    day = ctx.params.get("date")
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
        raise ConfigurationError(f"step {ctx.step.step_id} needs the run's `date` variable (a date)")
    return CostWindow.for_day(day)


def _replace_day(ctx: StepContext, table: str, schema_name: str, window: CostWindow, rows: list[dict]) -> int:
    """Create the table if absent, then swap the window's rows for `rows` in one transaction."""
    schema = load_schema("tenant", schema_name).model_copy(update={"name": table})
    ctx.warehouse.create_table(ctx.tenant_id, schema)
    target = table_ref(ctx.tenant_id, table)
    columns = schema.column_names
    unknown = {key for row in rows for key in row} - set(columns)
    if unknown:
        raise ConfigurationError(
            f"rows for {table} carry columns its schema lacks: {', '.join(sorted(unknown))}"
        )
    statements: list[tuple[str, dict[str, Any] | None]] = [
        (
            f"DELETE FROM {target} WHERE bucket_start >= @window_start AND bucket_start < @window_end",
            {"window_start": window.start, "window_end": window.end},
        )
    ]
    column_list = ", ".join(quote_identifier(c) for c in columns)
    picked = ", ".join(f"r.{quote_identifier(c)}" for c in columns)
    for first in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = [{c: row.get(c) for c in columns} for row in rows[first : first + ROWS_PER_STATEMENT]]
        statements.append(
            (f"INSERT INTO {target} ({column_list}) SELECT {picked} FROM UNNEST(@rows) AS r", {"rows": chunk})
        )
    counts = ctx.warehouse.run_atomically(statements)
    return sum(counts[1:])


def load_cost_day(
    ctx: StepContext, config: CostApiConfig, *, provider: str, fetch_day: FetchDay, make_api: MakeApi
) -> StepResult:
    """Fetch the run's day with the tenant's `provider` key and replace that day in `config.table`.

    Without an integration, the day's rows the tenant uploaded into `config.table` are the day.
    """
    window = _window(ctx)
    try:
        integration = read_integration(ctx.runtime, ctx.tenant_id, provider)
    except IntegrationMissing:
        where = (
            "bucket_start >= TIMESTAMP(@date) AND bucket_start < TIMESTAMP(DATE_ADD(@date, INTERVAL 1 DAY))"
        )
        period = window.start.date().isoformat()
        return use_uploaded_rows(
            ctx,
            table=config.table,
            where=where,
            period=period,
            missing=f"no {provider} integration",
            instead=integration_setup(ctx.tenant_id, provider),
        )
    with make_api(ctx.runtime.settings, integration.credential.get_secret_value()) as api:
        fetch = fetch_day(api, window, integration)
    loaded_at = utcnow()
    rows = [row | {"loaded_at": loaded_at} for row in fetch.rows]
    written = _replace_day(ctx, config.table, config.raw_schema, window, rows)
    details = fetch.summary() | {"table": config.table, "window_start": window.start.isoformat()}
    return StepResult(rows_processed=written, details=details)
