"""The cost summary's query parameters and answer (CONTRACT §2), as pydantic models.

The same models validate a request, shape the response and give /openapi.json its schemas, so the
document cannot describe a parameter or a field the route does not have.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from common.contracts.base import QueryParameters, ResponseBody

GroupBy = Literal["provider", "service", "day"]
Metric = Literal["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"]
ISO_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
MAX_RANGE_DAYS = 400


def _iso_day(value: object) -> object:
    """Only YYYY-MM-DD: no timestamps, week dates or compact forms that fromisoformat would also take."""
    if isinstance(value, str):
        if not ISO_DAY_RE.fullmatch(value):
            raise ValueError("not a date YYYY-MM-DD")
        return dt.date.fromisoformat(value)
    return value


IsoDay = Annotated[dt.date, BeforeValidator(_iso_day)]


class CostSummaryQuery(QueryParameters):
    """Query parameters of GET /api/v1/costs/{org}/summary (parsed by common.services.costs.parse_query)."""

    model_config = ConfigDict(extra="forbid")
    single_values: ClassVar[bool] = True
    messages: ClassVar[dict[str, str]] = {
        "start": "start must be a date YYYY-MM-DD",
        "end": "end must be a date YYYY-MM-DD",
        "group_by": "group_by must be one of: provider, service, day",
        "metric": "metric must be one of: BilledCost, EffectiveCost, ListCost, ContractedCost",
        "convert_to": "convert_to must be an ISO 4217 currency code of 3 letters, e.g. EUR",
    }

    start: IsoDay | None = Field(
        None,
        description="First UTC day (YYYY-MM-DD), inclusive, on DATE(ChargePeriodStart). "
        "Default: the first day of end's month (of the current month when end is omitted).",
    )
    end: IsoDay | None = Field(
        None,
        description=f"Last UTC day (YYYY-MM-DD), inclusive. Default: today (UTC). "
        f"start must not be after end; at most {MAX_RANGE_DAYS} days, both ends included.",
    )
    group_by: GroupBy = Field(
        "provider",
        description="provider (ProviderName), service (ServiceName) or day (DATE(ChargePeriodStart), UTC).",
    )
    metric: Metric = Field("BilledCost", description="The FOCUS cost column to add up.")
    convert_to: str | None = Field(
        None,
        pattern=CURRENCY_PATTERN,
        description="ISO 4217 code. Converts every currency in range with the tenant's exchange_rates table "
        "(columns from_currency, to_currency, rate; upload it to /api/v1/data/{org}/uploads/exchange_rates).",
    )


class CostGroup(ResponseBody):
    """The cost of one key (provider, service or day) in one currency."""

    key: str | None = Field(description="ProviderName, ServiceName or the day (YYYY-MM-DD).")
    cost: float


class CurrencyCostGroup(ResponseBody):
    """The cost of one key in one of several currencies (never added to another currency)."""

    key: str | None = Field(description="ProviderName, ServiceName or the day (YYYY-MM-DD).")
    currency: str | None
    cost: float


class CurrencyTotal(ResponseBody):
    """Everything in range of one BillingCurrency."""

    currency: str | None
    total: float
    rows: int
    groups: list[CostGroup]


class RateUsed(ResponseBody):
    """A rate from the tenant's exchange_rates table that the conversion applied."""

    model_config = ConfigDict(populate_by_name=True)

    from_currency: str = Field(alias="from")
    rate: float


class Conversion(ResponseBody):
    """How a converted summary was converted."""

    to: str
    rates: list[RateUsed]


class CostSummary(ResponseBody):
    """Costs of focus_costs in range, grouped; currencies are added together only when converted."""

    start: dt.date
    end: dt.date
    group_by: GroupBy
    metric: Metric
    rows: int = Field(description="focus_costs rows in range.")
    currency: str | None = Field(description="The one currency of total and groups; null when several.")
    total: float | None = Field(description="Sum of the groups; null when rows are in several currencies.")
    groups: list[CostGroup | CurrencyCostGroup] = Field(
        description="Sorted by cost, highest first (by day for group_by=day). With several currencies, one "
        "entry per key and currency, each with its currency."
    )
    by_currency: list[CurrencyTotal] = Field(description="Totals and groups per BillingCurrency, as billed.")
    conversion: Conversion | None = Field(
        None, description="How amounts were converted; null without convert_to."
    )
    message: str | None = Field(
        None, description="Why total is null when rows are in several currencies; else null."
    )
