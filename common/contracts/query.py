"""What query-string models share: whole numbers written as plain decimal digits.

Use `Annotated[int, Field(ge=..., le=...), DecimalDigits]`: the bounds before the validator, so the JSON
schema shows them as minimum and maximum.
"""

from __future__ import annotations

import re

from pydantic import BeforeValidator

DIGITS_RE = re.compile(r"[0-9]{1,9}")


def _decimal_digits(value: object) -> object:
    """Only 1-9 ASCII digits: no sign, spaces, decimals or exponents that int() or pydantic would also take."""
    if isinstance(value, str) and not DIGITS_RE.fullmatch(value):
        raise ValueError("not a whole number written in digits")
    return value


DecimalDigits = BeforeValidator(_decimal_digits)
