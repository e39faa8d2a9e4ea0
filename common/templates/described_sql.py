"""SQL written for the described system, rewritten so values travel as parameters and tables stay the tenant's.

The described system substituted every `{name}` into its SQL as text, so `'{date}'` was a string literal
holding the value. Its SQL is rewritten here once, when the template loads:

- A quoted placeholder (`'{date}'`, `"{start_date}"`: the whole literal) becomes the query parameter
  `@date`, typed like its variable. A placeholder inside a longer literal (`'%{name}%'`) becomes
  `CONCAT('%', CAST(@name AS STRING), '%')`. No value is ever written into the SQL text, so a value holding a
  quote or `'; DROP TABLE ...` stays data. A quoted placeholder of a variable the template does not declare
  (and that is no built-in) is refused.
- Every table a query reads is the tenant's own: the project part of a reference (`{project_id}.`) is
  dropped, the dataset part must be a placeholder (`{tenant_id}`, `{org_slug}`, `{dataset_id}`...) and
  becomes `{tenant_id}`, and a table named without a dataset gets it. A literal project or dataset name, a
  table name taken from a variable, and anything but a plain table in FROM are refused, so no template can
  reach another tenant's dataset.
- Any other unquoted placeholder keeps the typed rule: only identifier built-ins (`{tenant_id}`...).

A query is parsed (GoogleSQL, sqlglot) and written back out; a fragment (a `where:` or `expression:`) only has
its quoted placeholders turned into parameters, in place.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.dialects.bigquery import BigQuery
from sqlglot.tokens import Token, TokenType

from common.templates.models import BUILTINS, IDENTIFIER_BUILTINS

# The described system's placeholders had no escape: `{name}` anywhere is one.
DESCRIBED_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
TENANT_NAMES = frozenset({"tenant_id", "org_slug"})
# The described system's names for where a table lives; here always the tenant's dataset.
PROJECT_NAMES = frozenset({"project_id", "gcp_project_id", "bq_project_id"})
DATASET_NAMES = frozenset({"dataset_id", "dataset", "dataset_type", "bq_dataset_id"})
_STRINGS = frozenset({TokenType.STRING, TokenType.RAW_STRING, TokenType.NATIONAL_STRING})
_MARK = "__cvgph_{}_hpgvc__"
_MARK_RE = re.compile(r"__cvgph_([A-Za-z_][A-Za-z0-9_]*?)_hpgvc__")


class SqlRefused(ValueError):
    """The SQL cannot be translated safely; the message says why and what to write instead."""


@dataclass
class TranslatedQuery:
    """A described query in the typed shape: its SQL, the tenant tables it reads, what loading noted."""

    sql: str
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _tokens(sql: str) -> list[Token]:
    try:
        return BigQuery().tokenize(sql)
    except sqlglot.errors.SqlglotError as exc:
        raise SqlRefused(f"cannot be read as GoogleSQL: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _string_literal(text: str) -> str:
    return exp.Literal.string(text).sql("bigquery")


def _as_parameters(content: str) -> str:
    """A literal's content holding placeholders, as the parameter (or the CONCAT of text and parameters)."""
    whole = DESCRIBED_PLACEHOLDER_RE.fullmatch(content)
    if whole:
        return f"@{whole.group(1)}"
    parts, position = [], 0
    for match in DESCRIBED_PLACEHOLDER_RE.finditer(content):
        if match.start() > position:
            parts.append(_string_literal(content[position : match.start()]))
        parts.append(f"CAST(@{match.group(1)} AS STRING)")
        position = match.end()
    if position < len(content):
        parts.append(_string_literal(content[position:]))
    return f"CONCAT({', '.join(parts)})"


def parameterise_literals(sql: str, known: Collection[str]) -> str:
    """`sql` with each quoted placeholder made a query parameter; nothing else in the text changes.

    `known` are the names a parameter may have (declared variables and built-ins); a quoted placeholder of
    any other name is refused, naming it.
    """
    pieces, last = [], 0
    for token in _tokens(sql):
        names = DESCRIBED_PLACEHOLDER_RE.findall(token.text) if token.token_type in _STRINGS else []
        if token.token_type in (TokenType.BYTE_STRING, TokenType.HEX_STRING) and "{" in token.text:
            raise SqlRefused(
                f"a placeholder in the bytes literal {sql[token.start : token.end + 1]} cannot be a parameter"
            )
        if not names:
            continue
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SqlRefused(
                f"unknown placeholder '{{{unknown[0]}}}': {unknown[0]} is neither a declared variable nor a"
                f" built-in (declare it under variables; a quoted placeholder becomes the query parameter"
                f" @{unknown[0]})"
            )
        pieces += [sql[last : token.start], _as_parameters(token.text)]
        last = token.end + 1
    return "".join(pieces) + sql[last:]


def _mark(name: str) -> str:
    return _MARK.format(name)


def _shown(text: str) -> str:
    """`text` with its marks shown as the placeholders they stand for."""
    return _MARK_RE.sub(r"{\1}", text)


def _marked_name(identifier: str) -> str | None:
    """The placeholder an identifier consists of (`{dataset_id}` → dataset_id), or None if it is not one."""
    match = _MARK_RE.fullmatch(identifier)
    return match.group(1) if match else None


def _check_parameters(tree: exp.Expression, known: Collection[str]) -> None:
    for parameter in tree.find_all(exp.Parameter):
        name = parameter.name
        if name and name not in known:
            raise SqlRefused(f"@{name} is neither a declared variable nor a built-in")


def _to_tenant_table(table: exp.Table, declared: Collection[str], query: TranslatedQuery) -> None:
    """Point one table reference at the tenant's dataset, or refuse a reference that names another place."""
    if not isinstance(table.this, exp.Identifier):
        raise SqlRefused(f"reads {table.sql('bigquery')}: a query reads tables only (`{{tenant_id}}.table`)")
    name, dataset, project = table.name, table.db, table.catalog
    for marked in _MARK_RE.findall(name):
        if marked not in IDENTIFIER_BUILTINS:
            raise SqlRefused(
                f"a table name cannot come from the variable {{{marked}}}: name the table, as `{{tenant_id}}.table`"
            )
    shown = _shown(table.sql("bigquery"))
    if project:
        placeholder = _marked_name(project)
        if placeholder is None:
            raise SqlRefused(
                f"reads {shown} of project {project}: a template reads only its tenant's dataset"
            )
        if placeholder not in PROJECT_NAMES and placeholder not in declared:
            raise SqlRefused(f"unknown placeholder {{{placeholder}}} in the table reference {shown}")
    if dataset:
        placeholder = _marked_name(dataset)
        if placeholder is None:
            raise SqlRefused(
                f"reads {shown} of dataset {_shown(dataset)}: a template reads only its tenant's dataset;"
                f" write `{{tenant_id}}.{_shown(name)}`"
            )
        if placeholder in PROJECT_NAMES:
            raise SqlRefused(f"{{{placeholder}}} stands where the dataset goes in {shown}")
        if placeholder not in TENANT_NAMES:
            if placeholder not in DATASET_NAMES and placeholder not in declared:
                raise SqlRefused(f"unknown placeholder {{{placeholder}}} in the table reference {shown}")
            query.notes.append(f"{shown} is read as the tenant's own table {_shown(name)}")
    table.meta.pop("quoted_table", None)  # written back as `dataset`.`table`, as typed templates write it
    table.set("catalog", None)
    table.set("db", exp.to_identifier(_mark("tenant_id"), quoted=True))
    table.set("this", exp.to_identifier(name, quoted=True))
    if name not in query.tables and not _MARK_RE.search(name):
        query.tables.append(name)


def _restore(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in IDENTIFIER_BUILTINS:
        return f"{{{name}}}"
    raise SqlRefused(
        f"{{{name}}} outside quotes: only identifiers ({', '.join(sorted(IDENTIFIER_BUILTINS))}) may be written"
        f" into SQL; quote it ('{{{name}}}') to pass it as the query parameter @{name}"
    )


def translate_query(sql: str, declared: Collection[str]) -> TranslatedQuery:
    """A described `source.query` as typed-shape SQL (see the module docstring), or SqlRefused saying why."""
    known = set(declared) | BUILTINS
    text = parameterise_literals(sql, known)
    marked = DESCRIBED_PLACEHOLDER_RE.sub(lambda m: _mark(m.group(1)), text)
    try:
        trees = [tree for tree in sqlglot.parse(marked, read="bigquery") if tree is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise SqlRefused(f"does not parse as GoogleSQL: {_shown(_first_line(exc))}") from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        raise SqlRefused("must be one query (a SELECT whose rows the step writes)")
    tree = trees[0]
    _check_parameters(tree, known)
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    query = TranslatedQuery("")
    for table in list(tree.find_all(exp.Table)):
        if not table.db and not table.catalog and table.name in ctes:
            continue
        _to_tenant_table(table, declared, query)
    written = tree.sql(dialect="bigquery", pretty=True, comments=False)
    # The typed resolver reads {{ and }} as literal braces and {name} as a placeholder.
    written = written.replace("{", "{{").replace("}", "}}")
    query.sql = _MARK_RE.sub(_restore, written)
    return query


def translate_fragment(sql: str, declared: Collection[str]) -> str:
    """A described SQL fragment (`where:`, `expression:`) with its quoted placeholders made parameters."""
    return parameterise_literals(sql, set(declared) | BUILTINS)
