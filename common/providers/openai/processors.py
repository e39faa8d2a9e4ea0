"""openai.costs: one UTC day of GET /v1/organization/costs into openai_costs_raw (or the configured table)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from common.metadata.integrations import Integration
from common.processors.cost_api import CostApiConfig, load_cost_day
from common.processors.registry import StepContext, StepResult, processor
from common.providers.openai.costs_api import fetch_costs, openai_api
from common.sources.cost_window import CostFetch, CostWindow
from common.sources.provider_http import ProviderApi
from common.types import TableName

RAW_TABLE = "openai_costs_raw"


class OpenAiCostsConfig(CostApiConfig):
    """An openai.costs step as written in a template."""

    raw_schema: ClassVar[str] = RAW_TABLE
    table: TableName = Field(RAW_TABLE, description="raw table the day is replaced in")


def _fetch_day(api: ProviderApi, window: CostWindow, integration: Integration) -> CostFetch:
    organization = integration.settings.get("organization_id")
    organization = organization if isinstance(organization, str) and organization else None
    return fetch_costs(api, window, organization_id=organization)


@processor("openai.costs", config=OpenAiCostsConfig)
def load_openai_costs(ctx: StepContext, config: OpenAiCostsConfig) -> StepResult:
    """Replace the run's day of the tenant's OpenAI costs, fetched with its admin key."""
    return load_cost_day(ctx, config, provider="openai", fetch_day=_fetch_day, make_api=openai_api)
