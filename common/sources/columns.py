"""Column names a warehouse accepts, made from the names a file or an upload brings: one rule for both.

`snake_case` is AWS's own rule (CUR 2.0, Athena); `keep` keeps the case and replaces what BigQuery refuses.
Either way a name never starts with a digit or a reserved prefix and has at most 300 characters, and two
names that end up equal (case-insensitively, as in BigQuery) are refused rather than silently merged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from common.errors import BadRequest

ColumnNames = Literal["snake_case", "keep"]

_CAPITAL = re.compile(r"(?<!^)([A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_RESERVED_PREFIXES = ("_TABLE_", "_FILE_", "_PARTITION", "_ROW_TIMESTAMP", "__ROOT__", "_COLON_")


def _finish(name: str) -> str:
    """A name BigQuery accepts: not empty, no leading digit, no reserved prefix, at most 300 characters."""
    name = name or "column"
    if name[0].isdigit():
        name = f"_{name}"
    if name.upper().startswith(_RESERVED_PREFIXES):
        name = f"x{name}"
    return name[:300]


def snake_case(name: str) -> str:
    """AWS's own rule (CUR 2.0, Athena): `_` before each capital, separators to `_`, lower case.

    `lineItem/UnblendedCost` → `line_item_unblended_cost`, `reservation/ReservationARN` →
    `reservation_reservation_a_r_n` (as CUR 2.0 names it), `CostInBillingCurrency` → `cost_in_billing_currency`;
    names already in snake case are unchanged.
    """
    words = [_CAPITAL.sub(r"_\1", part).lower() for part in _SEPARATORS.split(name) if part]
    lead = "_" if name.startswith("_") else ""
    return _finish(lead + "_".join(words))


def keep_case(name: str) -> str:
    """The name with every character outside [A-Za-z0-9_] replaced by `_`."""
    return _finish(_UNSAFE.sub("_", name))


def rename_columns(
    names: Sequence[str], style: ColumnNames, where: str, *, added: Sequence[str] = ()
) -> list[str]:
    """Warehouse-safe names; names that collide (case-insensitively, as in BigQuery) with each other or with
    a column the platform adds (`added`) are refused, naming `where` and every clash."""
    rename = snake_case if style == "snake_case" else keep_case
    renamed = [rename(name) for name in names]
    origins: dict[str, list[str]] = {column: [f"{column} (added by the platform)"] for column in added}
    for original, new in zip(names, renamed, strict=True):
        origins.setdefault(new.lower(), []).append(original)
    clashes = [f"{', '.join(map(repr, found))} → {new}" for new, found in origins.items() if len(found) > 1]
    if clashes:
        raise BadRequest(f"{where}: columns collide after renaming: {'; '.join(clashes)}", code="column_collision")
    return renamed
