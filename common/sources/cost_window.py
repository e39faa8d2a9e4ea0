"""What provider cost loaders share: the UTC window they fetch, the rows they return, exact amounts."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from common.sources.provider_http import ProviderBadResponse, RequestStats, required

UTC = dt.UTC


@dataclass(frozen=True)
class CostWindow:
    """[start, end) in UTC, whole days: what one load asks a provider for and replaces in the raw table."""

    start: dt.datetime
    end: dt.datetime

    @classmethod
    def for_day(cls, day: dt.date) -> CostWindow:
        start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
        return cls(start, start + dt.timedelta(days=1))

    @property
    def days(self) -> int:
        return max(1, (self.end - self.start).days)

    def holds(self, bucket_start: dt.datetime) -> bool:
        return self.start <= bucket_start < self.end


@dataclass
class CostFetch:
    """Raw rows of one window, the dollar total per currency, and what fetching them took."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    stats: RequestStats = field(default_factory=RequestStats)
    buckets_outside_window: int = 0

    def add(self, row: dict[str, Any], currency: str, dollars: Decimal) -> None:
        self.rows.append(row)
        self.totals[currency.upper()] += dollars

    def summary(self) -> dict[str, Any]:
        """Step details: JSON-safe, totals as exact decimal strings."""
        return {
            "rows": len(self.rows),
            "pages": self.stats.pages,
            "requests": self.stats.requests,
            "retries": self.stats.retries,
            "total": {currency: str(amount) for currency, amount in sorted(self.totals.items())},
            "buckets_outside_window": self.buckets_outside_window,
        }


def amount_text(value: Any, where: str) -> str:
    """A delivered amount as text, losing nothing: strings as they are, numbers by repr (0.06 → "0.06").

    repr is the shortest text that reads back as the same float; an exponent (1e-05) is written out
    positionally (0.00001) with the same digits, so every SQL engine casts it to NUMERIC alike.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ProviderBadResponse(f"{where} is not a number or a decimal string")
    if isinstance(value, str):
        decimal_of(value, where)
        return value
    text = repr(value)
    number = decimal_of(text, where)
    return format(number, "f") if "e" in text.lower() else text


def decimal_of(text: str, where: str) -> Decimal:
    """The exact value of an amount's text; a non-number (or NaN, infinity) is a malformed response."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        raise ProviderBadResponse(f"{where} {text[:40]!r} is not a decimal number") from None
    if not number.is_finite():
        raise ProviderBadResponse(f"{where} {text[:40]!r} is not a finite number")
    return number


def optional_text(obj: dict[str, Any], key: str, where: str) -> str | None:
    """A nullable string field; absent and null both mean NULL, anything but a string is malformed."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ProviderBadResponse(f"{where}: {key} is not a string")


def window_results(
    page: dict[str, Any],
    window: CostWindow,
    fetch: CostFetch,
    *,
    label: str,
    bounds: Callable[[dict[str, Any], str], tuple[dt.datetime, dt.datetime]],
) -> Iterator[tuple[dt.datetime, dt.datetime, dict[str, Any], str]]:
    """(bucket start, bucket end, result, where) of every result of a page's buckets inside the window.

    Both cost APIs page through `data: [{<bucket bounds>, results: [...]}]`; buckets outside the window are
    counted, never loaded, so they cannot slip past the day's delete. `where` names the result in errors.
    """
    where_page = f"{label} page {fetch.stats.pages or 1}"
    buckets = required(page, "data", where_page)
    if not isinstance(buckets, list):
        raise ProviderBadResponse(f"{where_page}: data is not a list")
    for b, bucket in enumerate(buckets):
        where = f"{where_page}, bucket {b}"
        start, end = bounds(bucket, where)
        results = required(bucket, "results", where)
        if not isinstance(results, list):
            raise ProviderBadResponse(f"{where}: results is not a list")
        if not window.holds(start):
            fetch.buckets_outside_window += 1
            continue
        for r, result in enumerate(results):
            yield start, end, result, f"{where}, result {r}"
