"""BigQuery query parameters: typed scalars, arrays and structs from Python values, and `@name` binding.

Pure functions (no client, no network). No value is ever formatted into SQL: values travel as parameters.
"""

from __future__ import annotations

import datetime as dt
import numbers
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

import sqlglot
from google.cloud import bigquery
from sqlglot.tokens import TokenType

from common.errors import TerminalError
from common.warehouse.base import Params
from common.warehouse.sql import parameter_names


class QueryFailed(TerminalError):
    """The warehouse rejected a statement (a bug in a template or in the platform, not a caller's input)."""

    status = 500
    code = "query_failed"


QueryParameter = bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter | bigquery.StructQueryParameter


def scalar_type(value: Any) -> str:
    """The GoogleSQL type of a Python scalar (a NULL is typed STRING, as BigQuery needs a type)."""
    if value is None:
        return "STRING"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, numbers.Integral):
        return "INT64"
    if isinstance(value, numbers.Real) and not isinstance(value, Decimal):
        return "FLOAT64"
    if isinstance(value, Decimal):
        digits = value.as_tuple()
        fits = len(digits.digits) <= 38 and isinstance(digits.exponent, int) and digits.exponent >= -9
        return "NUMERIC" if fits and abs(value) < Decimal("1e29") else "BIGNUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes | bytearray):
        return "BYTES"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"  # naive datetimes are taken as UTC, as the DuckDB adapter's UTC session does
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    raise QueryFailed(f"query parameter of unsupported type {type(value).__name__}")


def query_parameter(name: str | None, value: Any) -> QueryParameter:
    """A typed BigQuery query parameter for a Python value: scalars, lists (ARRAY) and dicts (STRUCT)."""
    if isinstance(value, Mapping):
        return bigquery.StructQueryParameter(name, *(query_parameter(k, v) for k, v in value.items()))
    if isinstance(value, list | tuple):
        if any(v is None for v in value):
            raise QueryFailed(f"query parameter {name}: BigQuery arrays cannot hold NULL")
        if any(isinstance(v, Mapping) for v in value):
            return bigquery.ArrayQueryParameter(name, "STRUCT", [query_parameter(None, v) for v in value])
        kinds = {scalar_type(v) for v in value}
        if kinds == {"INT64", "FLOAT64"}:
            kinds = {"FLOAT64"}
        if len(kinds) > 1:
            raise QueryFailed(f"query parameter {name} mixes element types {sorted(kinds)}")
        # An empty list has no element to type it by; STRING is as good a guess as any.
        return bigquery.ArrayQueryParameter(name, kinds.pop() if kinds else "STRING", list(value))
    return bigquery.ScalarQueryParameter(name, scalar_type(value), value)


def prepare(sql: str, params: Params | None, prefix: str = "") -> tuple[str, list[QueryParameter]]:
    """The statement and the typed parameters it references (and only those), named `prefix + name`.

    A parameter whose value is None becomes the literal NULL: a typed NULL parameter would fail BigQuery's
    type checks wherever the other side is not of that type (`amount = @n` with amount FLOAT64), while an
    untyped NULL fits every type, as in the DuckDB adapter. NULL is a keyword, not data, so no value is
    formatted into SQL.
    """
    wanted = parameter_names(sql)
    given = dict(params or {})
    missing = wanted - given.keys()
    if missing:
        raise QueryFailed(f"query parameters not supplied: {', '.join(sorted(missing))}")
    renames: dict[str, str] = {}
    bound: list[QueryParameter] = []
    for name in sorted(wanted):
        if given[name] is None:
            renames[name] = "NULL"
            continue
        if prefix:
            renames[name] = f"@{prefix}{name}"
        bound.append(query_parameter(prefix + name, given[name]))
    return (_substitute_parameters(sql, renames) if renames else sql), bound


def _substitute_parameters(sql: str, renames: Mapping[str, str]) -> str:
    """Replace each `@name` token (not text in strings or comments, which the tokenizer tells apart)."""
    tokens = tokenize(sql)
    pieces: list[str] = []
    cursor = 0
    for i, token in enumerate(tokens[:-1]):
        following = tokens[i + 1]
        if token.token_type != TokenType.PARAMETER or following.start != token.end + 1:
            continue
        if following.text not in renames:
            continue
        pieces += [sql[cursor : token.start], renames[following.text]]
        cursor = following.end + 1
    return "".join(pieces) + sql[cursor:]


@lru_cache(maxsize=1024)
def tokenize(sql: str) -> list[Any]:
    """The statement's BigQuery-dialect tokens (cached: the same templates run again and again)."""
    return sqlglot.Dialect.get_or_raise("bigquery").tokenize(sql)


