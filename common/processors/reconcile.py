"""Reconciliation: totals of an output table must equal the source's, key by key (e.g. per day and currency).

Both queries return the same key columns plus `total`. A key present on one side only counts as a total of 0
on the other. Figures agree when |source - target| <= tolerance * max(|source|, |target|), with an absolute
floor of 1e-9 so rows of zero cost agree with each other.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from common.errors import ConfigurationError
from common.warehouse.base import Warehouse

ABSOLUTE_FLOOR = 1e-9
MAX_REPORTED = 5


def _totals(wh: Warehouse, sql: str, params: Mapping[str, Any], side: str) -> dict[tuple, float]:
    totals: dict[tuple, float] = {}
    for row in wh.query(sql, params):
        if "total" not in row:
            raise ConfigurationError(f"reconcile {side} query must return a `total` column")
        key = tuple((name, _plain(value)) for name, value in row.items() if name != "total")
        totals[key] = totals.get(key, 0.0) + float(row["total"] or 0.0)
    return totals


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (
            value.date().isoformat()
            if value == dt.datetime.combine(value.date(), dt.time(), value.tzinfo)
            else value.isoformat()
        )
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _label(key: tuple) -> str:
    return ", ".join(f"{name}={value}" for name, value in key) or "all rows"


def reconcile(
    wh: Warehouse, source: str, target: str, params: Mapping[str, Any], tolerance: float
) -> tuple[int, str]:
    """(number of keys whose totals differ, a message naming each with both figures)."""
    expected = _totals(wh, source, params, "source")
    actual = _totals(wh, target, params, "target")
    mismatches = []
    for key in sorted(set(expected) | set(actual), key=lambda k: tuple(str(v) for _, v in k)):
        a, b = expected.get(key, 0.0), actual.get(key, 0.0)
        if math.isclose(a, b, rel_tol=tolerance, abs_tol=ABSOLUTE_FLOOR):
            continue
        mismatches.append(f"{_label(key)}: source {a:.9g} vs output {b:.9g}")
    if not mismatches:
        return 0, f"{len(expected)} totals agree"
    shown = "; ".join(mismatches[:MAX_REPORTED])
    more = f"; and {len(mismatches) - MAX_REPORTED} more" if len(mismatches) > MAX_REPORTED else ""
    return len(mismatches), shown + more
