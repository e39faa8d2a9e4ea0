"""Anthropic cost report API → rows of `anthropic_costs_raw`.

`GET /v1/organizations/cost_report` answers daily buckets of results grouped by workspace and description.
`amount` is a decimal string in the currency's lowest unit (cents for USD): "123.4567" is $1.234567. It is
stored as delivered and turned into dollars only for totals. A null workspace_id is the default workspace.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
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

COST_REPORT_PATH = "/v1/organizations/cost_report"
API_VERSION = "2023-06-01"
MAX_BUCKETS_PER_PAGE = 31  # the API's upper bound for `limit` (buckets per page)
LABEL = "Anthropic cost report API"
KEY_HINT = "the cost report needs an organization Admin API key (sk-ant-admin...)"
CENTS_PER_DOLLAR = Decimal(100)
OPTIONAL_FIELDS = (
    "workspace_id", "description", "cost_type", "model", "service_tier", "context_window", "token_type",
    "inference_geo",
)  # fmt: skip


def request_headers(admin_key: str) -> dict[str, str]:
    """The headers authenticating a request with the admin key, in the API version the parser reads."""
    return {"x-api-key": admin_key, "anthropic-version": API_VERSION, "Accept": "application/json"}


def anthropic_api(settings: Settings, admin_key: str, **options: Any) -> ProviderApi:
    """A client of the Anthropic Admin API at settings.anthropic_api_base, authenticated by the admin key."""
    return ProviderApi.from_settings(
        LABEL, settings.anthropic_api_base, request_headers(admin_key), secret=admin_key, settings=settings,
        key_hint=KEY_HINT, **options,
    )  # fmt: skip


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_params(window: CostWindow) -> QueryParams:
    """Query of one window: daily buckets grouped by workspace and description."""
    return [
        ("starting_at", rfc3339(window.start)),
        ("ending_at", rfc3339(window.end)),
        ("bucket_width", "1d"),
        ("group_by[]", "workspace_id"),
        ("group_by[]", "description"),
        ("limit", min(window.days, MAX_BUCKETS_PER_PAGE)),
    ]


def _moment(bucket: dict[str, Any], key: str, where: str) -> dt.datetime:
    value = required(bucket, key, where)
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise ProviderBadResponse(f"{where}: {key} is not an RFC 3339 timestamp")
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def _bucket_bounds(bucket: dict[str, Any], where: str) -> tuple[dt.datetime, dt.datetime]:
    return _moment(bucket, "starting_at", where), _moment(bucket, "ending_at", where)


def parse_page(page: dict[str, Any], window: CostWindow, fetch: CostFetch) -> None:
    """Add one page's results (those of buckets inside the window) to fetch."""
    for start, end, result, at in window_results(page, window, fetch, label=LABEL, bounds=_bucket_bounds):
        cents = amount_text(required(result, "amount", at), f"{at} amount")
        currency = required(result, "currency", at)
        if not isinstance(currency, str) or not currency.strip():
            raise ProviderBadResponse(f"{at}: currency is not a currency code")
        row = {"bucket_start": start, "bucket_end": end}
        row |= {name: optional_text(result, name, at) for name in OPTIONAL_FIELDS}
        row |= {"currency": currency, "amount": cents}
        fetch.add(row, currency, decimal_of(cents, f"{at} amount") / CENTS_PER_DOLLAR)


def fetch_costs(api: ProviderApi, window: CostWindow) -> CostFetch:
    """Every cost result of the window, across all pages (rows without loaded_at)."""
    fetch = CostFetch(stats=api.stats)
    for page in api.pages(COST_REPORT_PATH, request_params(window)):
        parse_page(page, window, fetch)
    return fetch
