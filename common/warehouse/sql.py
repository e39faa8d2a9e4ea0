"""The one place identifiers are quoted, and SQL parameters are discovered."""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp

from common.errors import ConfigurationError


def quote_identifier(name: str) -> str:
    """A column or table name quoted for GoogleSQL."""
    return exp.to_identifier(name, quoted=True).sql("bigquery")


def table_ref(dataset: str, table: str) -> str:
    """`dataset`.`table`, quoted for GoogleSQL. Callers pass only validated names."""
    return exp.Table(this=exp.to_identifier(table, quoted=True), db=exp.to_identifier(dataset, quoted=True)).sql(
        "bigquery"
    )


@lru_cache(maxsize=1024)
def parameter_names(sql: str) -> frozenset[str]:
    """Names of the @params a GoogleSQL text references."""
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
