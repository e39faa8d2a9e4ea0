"""OpenAI organization costs API → rows of `openai_costs_raw`.

`GET /v1/organization/costs` answers daily buckets of results grouped by project and line item. Amounts are
in dollars; `amount.value` arrives as a JSON number or as a decimal string, so it is stored as delivered
(numbers by repr, which round-trips a float exactly) and summed as a Decimal.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.settings import Settings
from common.sources.cost_window import (
    CostFetch,
    CostWindow,
    amount_text,
    decimal_of,
    optional_text,
    window_results,
)
from common.sources.provider_http import ProviderApi, ProviderBadResponse, QueryParams, required

COSTS_PATH = "/v1/organization/costs"
MAX_BUCKETS_PER_PAGE = 180  # the API's upper bound for `limit` (buckets per page)
LABEL = "OpenAI costs API"
KEY_HINT = "the costs API needs an organization admin key (sk-admin-...) with read access to usage"


def request_headers(admin_key: str) -> dict[str, str]:
    """The headers authenticating a request with the admin key."""
    return {"Authorization": f"Bearer {admin_key}", "Accept": "application/json"}


def openai_api(settings: Settings, admin_key: str, **options: Any) -> ProviderApi:
    """A client of the OpenAI admin API at settings.openai_api_base, authenticated by the admin key."""
    return ProviderApi.from_settings(
        LABEL, settings.openai_api_base, request_headers(admin_key),
        secret=admin_key, settings=settings, key_hint=KEY_HINT, **options,
    )  # fmt: skip


def request_params(window: CostWindow) -> QueryParams:
    """Query of one window: daily buckets grouped by project and line item."""
    return [
        ("start_time", int(window.start.timestamp())),
        ("end_time", int(window.end.timestamp())),
        ("bucket_width", "1d"),
        ("group_by", "project_id"),
        ("group_by", "line_item"),
        ("limit", min(window.days, MAX_BUCKETS_PER_PAGE)),
    ]


def _timestamp(bucket: dict[str, Any], key: str, where: str) -> dt.datetime:
    value = required(bucket, key, where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderBadResponse(f"{where}: {key} is not a Unix timestamp")
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _bucket_bounds(bucket: dict[str, Any], where: str) -> tuple[dt.datetime, dt.datetime]:
    return _timestamp(bucket, "start_time", where), _timestamp(bucket, "end_time", where)


def parse_page(
    page: dict[str, Any], window: CostWindow, fetch: CostFetch, *, organization_id: str | None
) -> None:
    """Add one page's results (those of buckets inside the window) to fetch."""
    for start, end, result, at in window_results(page, window, fetch, label=LABEL, bounds=_bucket_bounds):
        amount = required(result, "amount", at)
        value = amount_text(required(amount, "value", f"{at} amount"), f"{at} amount.value")
        currency = required(amount, "currency", f"{at} amount")
        if not isinstance(currency, str) or not currency.strip():
            raise ProviderBadResponse(f"{at}: amount.currency is not a currency code")
        row = {
            "bucket_start": start,
            "bucket_end": end,
            "project_id": optional_text(result, "project_id", at),
            "line_item": optional_text(result, "line_item", at),
            "amount_value": value,
            "currency": currency,
            "organization_id": optional_text(result, "organization_id", at) or organization_id,
        }
        fetch.add(row, currency, decimal_of(value, f"{at} amount.value"))


def fetch_costs(api: ProviderApi, window: CostWindow, *, organization_id: str | None = None) -> CostFetch:
    """Every cost result of the window, across all pages (rows without loaded_at)."""
    fetch = CostFetch(stats=api.stats)
    for page in api.pages(COSTS_PATH, request_params(window)):
        parse_page(page, window, fetch, organization_id=organization_id)
    return fetch
