"""openai.costs and anthropic.costs: one UTC day of a provider's cost API into the tenant's raw table.

The tenant's admin key is decrypted here, inside the step, and lives only as long as the request. The day's
rows replace whatever an earlier run loaded for that day in one transaction (DELETE of the day, INSERT of
the rows), so a redelivered or repeated step leaves one copy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import ConfigurationError
from common.metadata.schemas import load_schema, schema_names
from common.processors.registry import StepContext, StepResult, processor
from common.services.integrations import Integration, read_integration
from common.types import utcnow
from common.sources import anthropic_costs, openai_costs
from common.sources.cost_window import CostFetch, CostWindow
from common.sources.provider_http import ProviderApi
from common.warehouse.sql import quote_identifier, table_ref

IDENT = r"^[a-z][a-z0-9_]{0,63}$"
ROWS_PER_STATEMENT = 500  # keeps each INSERT's parameter well under BigQuery's request size limit


class CostsConfig(BaseModel):
    """Step config: the raw table to replace the day in (its schema is the provider's raw schema)."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(pattern=IDENT)


def _integration(ctx: StepContext, provider: str) -> Integration:
    """The tenant's stored credential of a provider, decrypted now; a missing one is a terminal error."""
    return read_integration(ctx.runtime, ctx.tenant_id, provider)


def _config(ctx: StepContext, schema_name: str) -> CostsConfig:
    """The step's config (table defaults to the raw table); a bad one names the step and the problem."""
    try:
        config = CostsConfig.model_validate({"table": schema_name} | ctx.config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"step {ctx.step.step_id}: {problems}") from None
    if config.table != schema_name and config.table in schema_names("tenant"):
        raise ConfigurationError(
            f"step {ctx.step.step_id}: {config.table} is a platform table, not a raw cost table"
        )
    return config


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


def _load(
    ctx: StepContext,
    provider: str,
    schema_name: str,
    fetch_day: Callable[[ProviderApi, CostWindow, Integration], CostFetch],
    make_api: Callable[..., ProviderApi],
) -> StepResult:
    config = _config(ctx, schema_name)
    window = _window(ctx)
    integration = _integration(ctx, provider)
    with make_api(ctx.runtime.settings, integration.credential.get_secret_value()) as api:
        fetch = fetch_day(api, window, integration)
    loaded_at = utcnow()
    rows = [row | {"loaded_at": loaded_at} for row in fetch.rows]
    written = _replace_day(ctx, config.table, schema_name, window, rows)
    details = fetch.summary() | {"table": config.table, "window_start": window.start.isoformat()}
    return StepResult(rows_processed=written, details=details)


@processor("openai.costs")
def load_openai_costs(ctx: StepContext) -> StepResult:
    """One day of GET /v1/organization/costs into openai_costs_raw (or the configured table)."""

    def fetch_day(api: ProviderApi, window: CostWindow, integration: Integration) -> CostFetch:
        organization = integration.settings.get("organization_id")
        organization = organization if isinstance(organization, str) and organization else None
        return openai_costs.fetch_costs(api, window, organization_id=organization)

    return _load(ctx, "openai", "openai_costs_raw", fetch_day, openai_costs.openai_api)


@processor("anthropic.costs")
def load_anthropic_costs(ctx: StepContext) -> StepResult:
    """One day of GET /v1/organizations/cost_report into anthropic_costs_raw (or the configured table)."""

    def fetch_day(api: ProviderApi, window: CostWindow, integration: Integration) -> CostFetch:
        return anthropic_costs.fetch_costs(api, window)

    return _load(ctx, "anthropic", "anthropic_costs_raw", fetch_day, anthropic_costs.anthropic_api)
