"""DuckDB warehouse: one file under CONVERGENCE_HOME; datasets are schemas; SQL transpiled from GoogleSQL."""

from __future__ import annotations

import importlib.abc
import importlib.util
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from common.errors import BadRequest, DependencyUnavailable, NotFound, TerminalError
from common.warehouse.base import KeyedLocks, Params, Statement, Warehouse, WriteMode
from common.warehouse.schema import TableSchema, schema_from_arrow
from common.warehouse.sql import parameter_names, quote_identifier, statement_shape, table_ref


# DuckDB's Python client tries `import pandas` twice on every statement it binds parameters for. Without
# pandas installed each try walks the whole import machinery again (~0.35 ms each: most of a fan-out's
# time in the warehouse). This finder, first on sys.meta_path, answers "no such module" for pandas at once;
# it is installed only where pandas is not importable, so nothing that could import it changes.
class _NotInstalled(importlib.abc.MetaPathFinder):
    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == self.name:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


if importlib.util.find_spec("pandas") is None and not any(
    isinstance(finder, _NotInstalled) for finder in sys.meta_path
):
    sys.meta_path.insert(0, _NotInstalled("pandas"))


class QueryFailed(TerminalError):
    """The warehouse rejected a statement (a bug in a template or in the platform, not a caller's input)."""

    status = 500
    code = "query_failed"


def _keep_dates(node: exp.Expression) -> exp.Expression:
    # GoogleSQL DATE_ADD/DATE_SUB take and return a DATE; DuckDB's date + interval is a TIMESTAMP.
    if isinstance(node, exp.DateAdd | exp.DateSub) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node.copy(), "DATE")
    return node


# GoogleSQL NUMERIC is DECIMAL(38, 9) and BIGNUMERIC (76, 38); bare DECIMAL in DuckDB is (18, 3).
_DECIMALS = {exp.DataType.Type.DECIMAL: (38, 9), exp.DataType.Type.BIGDECIMAL: (38, 18)}


def _keep_precision(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.this in _DECIMALS and not node.expressions:
        precision, scale = _DECIMALS[node.this]
        return exp.DataType.build(f"DECIMAL({precision}, {scale})")
    return node


_PLACEHOLDERS = re.compile(r'"__convergence_name_(\d+)__"')


def to_duckdb(sql: str) -> str:
    """GoogleSQL → DuckDB SQL (semicolon-joined when the text holds several statements).

    Transpiles the statement's shape (quoted names as placeholders, see sql.statement_shape) once and puts
    the names back, so the same statement over many tenants' datasets is parsed once.
    """
    shape, names = statement_shape(sql)
    translated = _transpile(shape)
    restored = _PLACEHOLDERS.sub(lambda m: '"' + names[int(m.group(1))].replace('"', '""') + '"', translated)
    if "__convergence_name_" in restored:  # a name ended up somewhere other than a quoted identifier
        return _transpile(sql)
    return restored


@lru_cache(maxsize=2048)
def _transpile(sql: str) -> str:
    trees = [tree for tree in sqlglot.parse(sql, read="bigquery") if tree is not None]
    return ";\n".join(tree.transform(_keep_dates).transform(_keep_precision).sql("duckdb") for tree in trees)


def table_ddl(dataset: str, schema: TableSchema) -> str:
    """GoogleSQL CREATE TABLE of a schema's columns with NOT NULL (DuckDB has no partitioning or clustering)."""
    columns = ", ".join(
        f"{quote_identifier(f.name)} {f.standard_sql_type()}{' NOT NULL' if f.mode == 'REQUIRED' else ''}"
        for f in schema.fields
    )
    return f"CREATE TABLE {table_ref(dataset, schema.name)} ({columns})"


def _bound(sql: str, params: Params | None) -> dict[str, Any]:
    wanted = parameter_names(sql)
    given = dict(params or {})
    missing = wanted - given.keys()
    if missing:
        raise QueryFailed(f"query parameters not supplied: {', '.join(sorted(missing))}")
    return {name: given[name] for name in wanted}


class DuckDBWarehouse(Warehouse):
    """Embedded warehouse. One connection per process, serialised by a lock; session time zone UTC."""

    name = "duckdb"

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(self.path)
        except duckdb.IOException as exc:
            raise DependencyUnavailable(f"cannot open the DuckDB warehouse at {self.path}: {exc}") from None
        self._conn.execute("SET TimeZone = 'UTC'")
        self._mutex = threading.RLock()
        self._key_locks = KeyedLocks()

    # -- plumbing -------------------------------------------------------------------------------------
    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._mutex:
            try:
                yield self._conn
            except duckdb.CatalogException as exc:
                raise NotFound(f"not found in the warehouse: {_first_line(exc)}") from None
            except duckdb.IOException as exc:
                raise DependencyUnavailable(f"warehouse unavailable: {_first_line(exc)}") from None
            except duckdb.Error as exc:
                raise QueryFailed(f"warehouse rejected the statement: {_first_line(exc)}") from None

    def _run(
        self, conn: duckdb.DuckDBPyConnection, sql: str, params: Params | None
    ) -> duckdb.DuckDBPyConnection:
        return conn.execute(to_duckdb(sql), _bound(sql, params))

    # -- port -----------------------------------------------------------------------------------------
    def ping(self) -> None:
        with self._cursor() as conn:
            conn.execute("SELECT 1").fetchone()

    def dataset_exists(self, dataset: str) -> bool:
        with self._cursor() as conn:
            row = conn.execute(
                "SELECT 1 FROM information_schema.schemata WHERE catalog_name = current_database()"
                " AND schema_name = $name",
                {"name": dataset},
            ).fetchone()
        return row is not None

    def create_dataset(
        self, dataset: str, *, recreate: bool = False, labels: Mapping[str, str] | None = None
    ) -> bool:
        # DuckDB schemas carry no labels: `labels` matter only where datasets are billed and governed.
        with self._cursor() as conn:
            existed = self.dataset_exists(dataset)
            if existed and recreate:
                conn.execute(f"DROP SCHEMA {_q(dataset)} CASCADE")
            if existed and not recreate:
                return False
            conn.execute(f"CREATE SCHEMA {_q(dataset)}")
            return True

    def drop_dataset(self, dataset: str) -> None:
        with self._cursor() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {_q(dataset)} CASCADE")

    def table_exists(self, dataset: str, table: str) -> bool:
        # Binding the name is a lookup in the catalogue; information_schema.tables would list every table of
        # every tenant (tens of thousands at scale) on each call. No transaction is open here (run_atomically
        # holds the connection for its whole transaction), so a failed lookup aborts nothing.
        with self._mutex:
            try:
                self._conn.execute(f"SELECT NULL FROM {_q(dataset)}.{_q(table)} LIMIT 0")
            except duckdb.CatalogException:
                return False
            except duckdb.Error as exc:
                raise QueryFailed(f"warehouse rejected the statement: {_first_line(exc)}") from None
        return True

    def create_table(self, dataset: str, schema: TableSchema, *, recreate: bool = False) -> bool:
        ddl = to_duckdb(table_ddl(dataset, schema))
        with self._cursor() as conn:
            existed = self.table_exists(dataset, schema.name)
            if existed and not recreate:
                return False
            conn.execute("BEGIN TRANSACTION")
            try:
                if existed:
                    conn.execute(f"DROP TABLE {_q(dataset)}.{_q(schema.name)}")
                conn.execute(ddl)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return True

    def list_tables(self, dataset: str) -> list[str]:
        with self._cursor() as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
                " AND table_schema = $d ORDER BY table_name",
                {"d": dataset},
            ).fetchall()
        return [r[0] for r in rows]

    def table_columns(self, dataset: str, table: str) -> list[str]:
        with self._cursor() as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database()"
                " AND table_schema = $d AND table_name = $t ORDER BY ordinal_position",
                {"d": dataset, "t": table},
            ).fetchall()
        if not rows:
            raise NotFound(f"table {dataset}.{table} does not exist")
        return [r[0] for r in rows]

    def table_schema(self, dataset: str, table: str) -> TableSchema:
        with self._cursor() as conn:
            columns = conn.execute(
                "SELECT column_name, is_nullable, data_type FROM information_schema.columns"
                " WHERE table_catalog = current_database() AND table_schema = $d AND table_name = $t",
                {"d": dataset, "t": table},
            ).fetchall()
            if not columns:
                raise NotFound(f"table {dataset}.{table} does not exist")
            arrow = conn.sql(f"SELECT * FROM {_q(dataset)}.{_q(table)} LIMIT 0").to_arrow_table().schema
        # Arrow carries neither NOT NULL nor JSON (it is text there): both come from the catalogue.
        required = {name for name, nullable, _ in columns if nullable == "NO"}
        json = {name for name, _, kind in columns if kind == "JSON"}
        return schema_from_arrow(table, arrow, required=required, json=json)

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        with self._cursor() as conn:
            cursor = self._run(conn, sql, params)
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def execute(self, sql: str, params: Params | None = None) -> int:
        with self._cursor() as conn:
            return _affected(self._run(conn, sql, params))

    def run_atomically(self, statements: Sequence[Statement]) -> list[int]:
        with self._cursor() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                counts = [_affected(self._run(conn, sql, params)) for sql, params in statements]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return counts

    def insert_rows(self, dataset: str, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        with self._cursor() as conn:
            target = conn.sql(f"SELECT * FROM {_q(dataset)}.{_q(table)} LIMIT 0").to_arrow_table().schema
            unknown = {key for row in rows for key in row} - set(target.names)
            if unknown:
                raise BadRequest(
                    f"unknown columns for {table}: {', '.join(sorted(unknown))}", code="unknown_columns"
                )
            try:
                data = pa.Table.from_pylist([dict(r) for r in rows], schema=target)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise BadRequest(f"rows do not fit {table}: {exc}", code="invalid_rows") from None
            conn.register("_incoming_rows", data)
            try:
                conn.execute(f"INSERT INTO {_q(dataset)}.{_q(table)} BY NAME SELECT * FROM _incoming_rows")
            except (duckdb.ConstraintException, duckdb.ConversionException) as exc:
                raise BadRequest(
                    f"rows do not fit {table}: {_first_line(exc)}", code="invalid_rows"
                ) from None
            finally:
                conn.unregister("_incoming_rows")
            return data.num_rows

    def load_arrow(self, dataset: str, table: str, data: pa.Table, *, mode: WriteMode = "append") -> int:
        target = f"{_q(dataset)}.{_q(table)}"
        data = _embedded_decimals(data, table)
        with self._cursor() as conn:
            exists = self.table_exists(dataset, table)
            conn.register("_incoming_load", data)
            conn.execute("BEGIN TRANSACTION")
            try:
                if exists and mode == "replace":
                    conn.execute(f"DROP TABLE {target}")
                if not exists or mode == "replace":
                    conn.execute(f"CREATE TABLE {target} AS SELECT * FROM _incoming_load")
                else:
                    conn.execute(f"INSERT INTO {target} BY NAME SELECT * FROM _incoming_load")
                conn.execute("COMMIT")
            except duckdb.Error as exc:
                conn.execute("ROLLBACK")
                raise BadRequest(
                    f"data does not fit table {table}: {_first_line(exc)}", code="schema_mismatch"
                ) from None
            finally:
                conn.unregister("_incoming_load")
            return data.num_rows

    def lock(self, key: str) -> AbstractContextManager[None]:
        """In-process serialisation: embedded mode is one process."""
        return self._key_locks.hold(key)

    def close(self) -> None:
        with self._mutex:
            self._conn.close()


# BIGNUMERIC is DECIMAL(38, 18) here (see _DECIMALS); DuckDB reads no Arrow decimal wider than 128 bits.
_BIGNUMERIC = pa.decimal128(38, 18)


def _embedded_decimals(data: pa.Table, table: str) -> pa.Table:
    """The data with 256-bit decimal columns as DuckDB's BIGNUMERIC; a value losing digits is refused."""
    for index, field in enumerate(data.schema):
        if pa.types.is_decimal256(field.type):
            try:
                column = data.column(index).cast(_BIGNUMERIC)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise BadRequest(
                    f"column {field.name} of {table}: a value does not fit BIGNUMERIC here"
                    " (38 digits, 18 after the point)",
                    code="schema_mismatch",
                ) from None
            data = data.set_column(index, field.name, column)
    return data


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _affected(cursor: duckdb.DuckDBPyConnection) -> int:
    if cursor.description and cursor.description[0][0] == "Count":
        row = cursor.fetchone()
        return int(row[0]) if row else 0
    return 0


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
