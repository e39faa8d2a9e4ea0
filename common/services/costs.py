"""Cost summary of a tenant's focus_costs: totals by provider, service or day, one currency at a time.

Currencies are never added together silently. Rows in several BillingCurrency values give totals per
currency; a single total across them exists only when the caller asks for a conversion, which uses the
tenant's own `exchange_rates` table (uploaded like any other table), and the answer lists the rates used.
Sums are computed by the warehouse; Python only converts, adds the per-group sums and rounds at the end.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from common.contracts.base import parse_query_string
from common.contracts.costs import (
    MAX_RANGE_DAYS,
    Conversion,
    CostGroup,
    CostSummary,
    CostSummaryQuery,
    CurrencyCostGroup,
    CurrencyTotal,
    RateUsed,
)
from common.errors import BadRequest, ConvergenceError, ValidationFailed
from common.runtime import Runtime
from common.warehouse.sql import quote_identifier, table_ref

FOCUS_TABLE = "focus_costs"
RATES_TABLE = "exchange_rates"
RATE_COLUMNS = ("from_currency", "to_currency", "rate")
GROUP_COLUMNS = {"provider": "ProviderName", "service": "ServiceName", "day": "ChargePeriodStart"}
DECIMALS = 6


def _invalid(message: str, parameter: str) -> BadRequest:
    return BadRequest(message, code="invalid_query", parameter=parameter)


def parse_query(args: Iterable[tuple[str, list[str]]], today: dt.date | None = None) -> CostSummaryQuery:
    """Validate the query string (name → every value given) and fill in the default range."""
    query = parse_query_string(CostSummaryQuery, args)
    today = today or dt.datetime.now(dt.UTC).date()
    end = query.end or today
    start = query.start or end.replace(day=1)
    if start > end:
        raise _invalid(f"start ({start}) is after end ({end})", "start")
    days = (end - start).days + 1
    if days > MAX_RANGE_DAYS:
        raise _invalid(
            f"start to end spans {days} days; at most {MAX_RANGE_DAYS} are allowed, both ends included", "end"
        )
    convert_to = query.convert_to.upper() if query.convert_to else None
    return query.model_copy(update={"start": start, "end": end, "convert_to": convert_to})


def _columns(rt: Runtime, org: str, table: str) -> dict[str, str]:
    """lower-case name → actual name of a tenant table's columns (uploads keep the uploader's case)."""
    return {name.lower(): name for name in rt.warehouse.table_columns(org, table)}


def _grouped_costs(rt: Runtime, org: str, query: CostSummaryQuery) -> list[dict[str, Any]]:
    """(key, currency, cost, rows) per group from the warehouse; [] when the tenant has no focus_costs."""
    if not rt.warehouse.table_exists(org, FOCUS_TABLE):
        return []
    columns = _columns(rt, org, FOCUS_TABLE)
    wanted = ("ChargePeriodStart", "BillingCurrency", query.metric, GROUP_COLUMNS[query.group_by])
    missing = [name for name in dict.fromkeys(wanted) if name.lower() not in columns]
    if missing:
        raise ValidationFailed(
            f"{FOCUS_TABLE} has no column {', '.join(missing)}; it must follow the FOCUS 1.2 column names",
            code="invalid_focus_costs",
        )
    charge_start, currency, metric, group = (quote_identifier(columns[name.lower()]) for name in wanted)
    key = f"CAST(DATE({charge_start}) AS STRING)" if query.group_by == "day" else f"CAST({group} AS STRING)"
    # A half-open timestamp range is the same days as DATE(ChargePeriodStart) BETWEEN start AND end, and
    # lets BigQuery prune the table's ChargePeriodStart partitions.
    sql = (
        f"SELECT {key} AS group_key, {currency} AS currency, SUM({metric}) AS cost, COUNT(*) AS row_count"
        f" FROM {table_ref(org, FOCUS_TABLE)}"
        f" WHERE {charge_start} >= @range_start AND {charge_start} < @range_end"
        " GROUP BY 1, 2"
    )
    first, last = query.start, query.end
    if first is None or last is None:
        raise ValueError("summarise needs a query from parse_query, which fills in start and end")
    params = {
        "range_start": dt.datetime.combine(first, dt.time(), dt.UTC),
        "range_end": dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC),
    }
    try:
        rows = rt.warehouse.query(sql, params)
    except ConvergenceError as exc:
        if exc.code != "query_failed":
            raise
        raise ValidationFailed(
            f"{FOCUS_TABLE} cannot be summarised; are its column types those of FOCUS 1.2? ({exc.message})",
            code="invalid_focus_costs",
        ) from None
    for row in rows:
        row["cost"] = float(row["cost"] or 0.0)
        if not math.isfinite(row["cost"]):
            raise ValidationFailed(
                f"{FOCUS_TABLE} holds costs that are not finite numbers", code="invalid_focus_costs"
            )
    return rows


def _exchange_rates(rt: Runtime, org: str, target: str, needed: set[str]) -> dict[str, float]:
    """currency → rate to `target` for every needed currency, from the tenant's exchange_rates table."""
    listed = ", ".join(sorted(needed))
    if not rt.warehouse.table_exists(org, RATES_TABLE):
        raise ValidationFailed(
            f"no exchange rate to {target} for {listed}: there is no {RATES_TABLE} table; upload one with columns "
            f"{', '.join(RATE_COLUMNS)} to /api/v1/data/{org}/uploads/{RATES_TABLE}",
            code="missing_exchange_rate",
            currencies=sorted(needed),
        )
    columns = _columns(rt, org, RATES_TABLE)
    missing = [name for name in RATE_COLUMNS if name not in columns]
    if missing:
        raise ValidationFailed(
            f"{RATES_TABLE} has no column {', '.join(missing)}; it needs {', '.join(RATE_COLUMNS)}",
            code="invalid_exchange_rates",
        )
    source, destination, rate = (quote_identifier(columns[name]) for name in RATE_COLUMNS)
    sql = (
        f"SELECT DISTINCT UPPER(TRIM(CAST({source} AS STRING))) AS from_currency, CAST({rate} AS STRING) AS rate"
        f" FROM {table_ref(org, RATES_TABLE)} WHERE UPPER(TRIM(CAST({destination} AS STRING))) = @target"
    )
    try:
        rows = rt.warehouse.query(sql, {"target": target})
    except ConvergenceError as exc:
        if exc.code != "query_failed":
            raise
        raise ValidationFailed(
            f"{RATES_TABLE} cannot be read: {exc.message}", code="invalid_exchange_rates"
        ) from None
    found: dict[str, set[float]] = defaultdict(set)
    for row in rows:
        currency = row["from_currency"]
        if currency not in needed:
            continue
        try:
            value = float(str(row["rate"]).strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ValidationFailed(
                f"{RATES_TABLE}: the rate from {currency} to {target} is not a positive number: {str(row['rate'])[:40]!r}",
                code="invalid_exchange_rates",
            )
        found[currency].add(value)
    ambiguous = sorted(c for c, values in found.items() if len(values) > 1)
    if ambiguous:
        raise ValidationFailed(
            f"{RATES_TABLE} holds several different rates to {target} for {', '.join(ambiguous)}; keep one each",
            code="ambiguous_exchange_rate",
            currencies=ambiguous,
        )
    absent = sorted(needed - found.keys())
    if absent:
        raise ValidationFailed(
            f"no exchange rate to {target} for {', '.join(absent)} in {RATES_TABLE}: add rows with "
            f"from_currency {', '.join(absent)} and to_currency {target}",
            code="missing_exchange_rate",
            currencies=absent,
        )
    return {currency: values.pop() for currency, values in found.items()}


def _money(value: float) -> float:
    return round(value, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _sorted_groups(costs: Mapping[str | None, float], by_day: bool) -> list[CostGroup]:
    def order(item: tuple[str | None, float]) -> tuple[Any, ...]:
        key, cost = item
        name = (key is None, key or "")
        return name if by_day else (-cost, *name)

    return [CostGroup(key=key, cost=_money(cost)) for key, cost in sorted(costs.items(), key=order)]


def summarise(rt: Runtime, org: str, query: CostSummaryQuery) -> dict[str, Any]:
    """The cost summary of one tenant for a parsed query (see parse_query)."""
    rows = _grouped_costs(rt, org, query)
    by_day = query.group_by == "day"
    per_currency: dict[str | None, dict[str | None, float]] = defaultdict(dict)
    row_counts: dict[str | None, int] = defaultdict(int)
    for row in rows:
        per_currency[row["currency"]][row["group_key"]] = row["cost"]
        row_counts[row["currency"]] += int(row["row_count"])
    currencies = sorted(per_currency, key=lambda c: (c is None, c or ""))
    by_currency = [
        CurrencyTotal(
            currency=currency,
            total=_money(math.fsum(per_currency[currency].values())),
            rows=row_counts[currency],
            groups=_sorted_groups(per_currency[currency], by_day),
        )
        for currency in currencies
    ]
    summary: dict[str, Any] = {
        "start": query.start,
        "end": query.end,
        "group_by": query.group_by,
        "metric": query.metric,
        "rows": sum(row_counts.values()),
        "by_currency": by_currency,
    }
    if query.convert_to:
        target = query.convert_to
        needed = {c for c in currencies if c != target}
        # A row without a BillingCurrency cannot be converted: name it rather than guess.
        rates = _exchange_rates(rt, org, target, {c or "(none)" for c in needed}) if needed else {}
        converted: dict[str | None, list[float]] = defaultdict(list)
        for currency, groups in per_currency.items():
            factor = 1.0 if currency == target else rates[currency or "(none)"]
            for key, cost in groups.items():
                converted[key].append(cost * factor)
        sums = {key: math.fsum(values) for key, values in converted.items()}
        summary |= {
            "currency": target,
            "total": _money(math.fsum(v for values in converted.values() for v in values)),
            "groups": _sorted_groups(sums, by_day),
            "conversion": Conversion(
                to=target, rates=[RateUsed(from_currency=c, rate=r) for c, r in sorted(rates.items())]
            ),
        }
    elif len(currencies) <= 1:
        only = by_currency[0] if by_currency else None
        summary |= {
            "currency": only.currency if only else None,
            "total": only.total if only else 0.0,
            "groups": only.groups if only else [],
        }
    else:
        mixed = [
            CurrencyCostGroup(key=group.key, currency=entry.currency, cost=group.cost)
            for entry in by_currency
            for group in entry.groups
        ]
        names = ", ".join(c or "(none)" for c in currencies)
        summary |= {
            "currency": None,
            "total": None,
            "groups": mixed,
            "message": f"costs in range are in {len(currencies)} currencies ({names}) and are not added together: "
            "totals are per currency in by_currency; pass convert_to to convert them with your exchange_rates table",
        }
    return CostSummary(**summary).model_dump(mode="json", by_alias=True)
