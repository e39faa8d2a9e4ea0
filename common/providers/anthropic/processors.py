"""anthropic.costs: one UTC day of GET /v1/organizations/cost_report into anthropic_costs_raw (or `table`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from common.metadata.integrations import Integration
from common.processors.cost_api import CostApiConfig, load_cost_day
from common.processors.registry import StepContext, StepResult, processor
from common.providers.anthropic.costs_api import anthropic_api, fetch_costs
from common.sources.cost_window import CostFetch, CostWindow
from common.sources.provider_http import ProviderApi
from common.types import TableName

RAW_TABLE = "anthropic_costs_raw"


class AnthropicCostsConfig(CostApiConfig):
    """An anthropic.costs step as written in a template."""

    raw_schema: ClassVar[str] = RAW_TABLE
    table: TableName = Field(RAW_TABLE, description="raw table the day is replaced in")


def _fetch_day(api: ProviderApi, window: CostWindow, integration: Integration) -> CostFetch:
    return fetch_costs(api, window)


@processor("anthropic.costs", config=AnthropicCostsConfig)
def load_anthropic_costs(ctx: StepContext, config: AnthropicCostsConfig) -> StepResult:
    """Replace the run's day of the tenant's Anthropic costs, fetched with its admin key."""
    return load_cost_day(ctx, config, provider="anthropic", fetch_day=_fetch_day, make_api=anthropic_api)
