"""The one place identifiers are quoted, and SQL parameters are discovered."""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp

from common.errors import ConfigurationError

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=65_536)
def quote_identifier(name: str) -> str:
    """A column or table name quoted for GoogleSQL.

    A plain name (letters, digits, underscores: every dataset, table and column the platform makes) is
    wrapped in backticks directly; anything else is quoted by sqlglot's generator, which escapes it. A
    fan-out quotes tens of thousands of names, so the common case must not build an expression tree.
    """
    if _PLAIN_NAME.fullmatch(name):
        return f"`{name}`"
    return exp.to_identifier(name, quoted=True).sql("bigquery")


def table_ref(dataset: str, table: str) -> str:
    """`dataset`.`table`, quoted for GoogleSQL. Callers pass only validated names."""
    return f"{quote_identifier(dataset)}.{quote_identifier(table)}"


_QUOTED_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
_PLACEHOLDER = "__convergence_name_{}__"


def statement_shape(sql: str) -> tuple[str, list[str]]:
    """The SQL with each `quoted` name replaced by a numbered placeholder, and the names in order.

    The same statement for ten thousand tenants differs only in its dataset names; parsing and transpiling
    its shape once (cached) instead of once per tenant is what keeps a fan-out from spending its time in the
    SQL parser.
    """
    names: list[str] = []

    def stash(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"`{_PLACEHOLDER.format(len(names) - 1)}`"

    return _QUOTED_NAME.sub(stash, sql), names


def parameter_names(sql: str) -> frozenset[str]:
    """Names of the @params a GoogleSQL text references."""
    return _parameter_names(statement_shape(sql)[0])


@lru_cache(maxsize=1024)
def _parameter_names(sql: str) -> frozenset[str]:
    try:
        trees = sqlglot.parse(sql, read="bigquery")
    except sqlglot.errors.ParseError as exc:
        raise ConfigurationError(f"SQL does not parse as GoogleSQL: {exc}") from None
    names: set[str] = set()
    for tree in trees:
        if tree is None:
            continue
        for node in tree.find_all(exp.Parameter):
            names.add(node.name)
    return frozenset(names)
