"""BigQuery warehouse: google-cloud-bigquery jobs with client-chosen ids; values only as query parameters.

Writes are idempotent under retry: every job gets an id chosen here, so a jobs.insert that reached BigQuery
but whose answer was lost comes back as 409 Conflict on retry, and the adapter then adopts the existing
job (get_job) instead of running it twice. Rows are written by load jobs, never by streaming inserts, so
every row can be UPDATEd or DELETEd at once (DESIGN: never stream a row you will later update).

With BIGQUERY_EMULATOR_HOST set the client talks to bqemulator with anonymous credentials. bqemulator
does not bind query parameters inside multi-statement scripts, so there `run_atomically` uses the
emulated transaction described at `_run_emulated_transaction`; everything else is one code path.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import math
import numbers
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import requests
import sqlglot
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery
from sqlglot import exp
from sqlglot.tokens import TokenType

from common.errors import (
    BadRequest,
    ConfigurationError,
    Conflict,
    ConvergenceError,
    DependencyUnavailable,
    NotFound,
    TerminalError,
)
from common.metadata.schemas import SchemaField, TableSchema
from common.warehouse.base import Params, Statement, Warehouse, WriteMode
from common.warehouse.sql import parameter_names, quote_identifier, table_ref

log = logging.getLogger(__name__)

JOB_PREFIX = "convergence"
#: Tables the adapter creates for a moment (staging of replace loads, emulated-transaction snapshots).
INTERNAL_PREFIX = "_convergence_"
_TRANSIENT_REASONS = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "quotaExceeded", "jobRateLimitExceeded"}
)
_TRANSIENT_ERRORS = (
    gexc.ServerError,
    gexc.TooManyRequests,
    gexc.RetryError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    auth_exceptions.TransportError,
    FutureTimeout,
)
_CLIENT_ERRORS = (gexc.GoogleAPICallError, requests.exceptions.RequestException, auth_exceptions.GoogleAuthError,
                  *_TRANSIENT_ERRORS)  # fmt: skip


class QueryFailed(TerminalError):
    """The warehouse rejected a statement (a bug in a template or in the platform, not a caller's input)."""

    status = 500
    code = "query_failed"


# -- query parameters -----------------------------------------------------------------------------------

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
    tokens = _tokens(sql)
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
def _tokens(sql: str) -> list[Any]:
    return sqlglot.Dialect.get_or_raise("bigquery").tokenize(sql)


# -- DDL from table schemas ------------------------------------------------------------------------------

_STANDARD = {
    "STRING": "STRING", "BYTES": "BYTES", "INTEGER": "INT64", "INT64": "INT64", "FLOAT": "FLOAT64",
    "FLOAT64": "FLOAT64", "NUMERIC": "NUMERIC", "BIGNUMERIC": "BIGNUMERIC", "BOOLEAN": "BOOL", "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP", "DATE": "DATE", "TIME": "TIME", "DATETIME": "DATETIME", "JSON": "JSON",
    "RECORD": "STRUCT", "STRUCT": "STRUCT", "GEOGRAPHY": "GEOGRAPHY",
}  # fmt: skip


def standard_type(kind: str) -> str:
    """A legacy or standard BigQuery type name in GoogleSQL spelling (INTEGER → INT64)."""
    try:
        return _STANDARD[kind.upper()]
    except KeyError:
        raise ConfigurationError(f"unknown BigQuery type {kind!r}") from None


def column_type(field: SchemaField) -> str:
    """A column's GoogleSQL type with nested names quoted, e.g. ARRAY<STRUCT<`key` STRING>>."""
    base = standard_type(field.type)
    if base == "STRUCT":
        base = f"STRUCT<{', '.join(_column(child, describe=False) for child in field.fields)}>"
    return f"ARRAY<{base}>" if field.mode == "REPEATED" else base


def _column(field: SchemaField, *, describe: bool = True) -> str:
    text = f"{quote_identifier(field.name)} {column_type(field)}"
    if field.mode == "REQUIRED":
        text += " NOT NULL"
    if describe and field.description:
        text += f" OPTIONS(description={_string_literal(field.description)})"
    return text


def _string_literal(text: str) -> str:
    # Descriptions come from configs/schemas (the repository), never from a request; DDL takes no parameters.
    return exp.Literal.string(text).sql("bigquery")


def partition_expression(schema: TableSchema) -> str | None:
    """The PARTITION BY expression of a table schema's time partitioning, or None."""
    spec = schema.time_partitioning
    if spec is None:
        return None
    if spec.field is None:  # ingestion-time partitioning
        return "_PARTITIONDATE" if spec.type == "DAY" else f"TIMESTAMP_TRUNC(_PARTITIONTIME, {spec.type})"
    by_name = {f.name: f for f in schema.fields}
    if spec.field not in by_name:
        raise ConfigurationError(f"table {schema.name}: partitioning field {spec.field!r} is not a column")
    column, kind = quote_identifier(spec.field), standard_type(by_name[spec.field].type)
    if kind == "DATE" and spec.type != "HOUR":
        return column if spec.type == "DAY" else f"DATE_TRUNC({column}, {spec.type})"
    if kind in ("TIMESTAMP", "DATETIME"):
        return f"{kind}_TRUNC({column}, {spec.type})"
    raise ConfigurationError(f"table {schema.name}: cannot partition by {spec.type} on a {kind} column")


def create_table_ddl(dataset: str, schema: TableSchema, *, replace: bool = False) -> str:
    """CREATE [OR REPLACE] TABLE with columns, NOT NULL, partitioning, clustering and descriptions."""
    lines = [
        f"CREATE {'OR REPLACE ' if replace else ''}TABLE {table_ref(dataset, schema.name)} (",
        ",\n".join(f"  {_column(field)}" for field in schema.fields),
        ")",
    ]
    partition = partition_expression(schema)
    if partition:
        lines.append(f"PARTITION BY {partition}")
    if schema.clustering and schema.clustering.fields:
        lines.append(f"CLUSTER BY {', '.join(quote_identifier(name) for name in schema.clustering.fields)}")
    if schema.description:
        lines.append(f"OPTIONS(description={_string_literal(schema.description)})")
    return "\n".join(lines)


# -- rows for load jobs ----------------------------------------------------------------------------------


class RowMismatch(ValueError):
    """A row that does not fit the table's schema."""


def ndjson_rows(rows: Sequence[Mapping[str, Any]], fields: Sequence[bigquery.SchemaField]) -> bytes:
    """Rows as newline-delimited JSON, checked against the table's schema first.

    The checks are as strict as the DuckDB adapter's Arrow conversion, and they run before anything is sent:
    a load job failed by BigQuery still counts against the table's daily load quota.
    """
    lines = []
    for number, row in enumerate(rows, start=1):
        try:
            lines.append(json.dumps(_record(row, fields, ""), ensure_ascii=False, allow_nan=False))
        except (RowMismatch, TypeError, ValueError) as exc:
            raise RowMismatch(f"row {number}: {exc}") from None
    return ("\n".join(lines) + "\n").encode()


def _record(row: Mapping[str, Any], fields: Sequence[bigquery.SchemaField], path: str) -> dict[str, Any]:
    known = {field.name: field for field in fields}
    unknown = sorted(set(row) - known.keys())
    if unknown:
        raise RowMismatch(f"unknown columns {', '.join(path + name for name in unknown)}")
    out: dict[str, Any] = {}
    for name, field in known.items():
        value = row.get(name)
        if field.mode == "REPEATED":
            if value is None:
                continue  # BigQuery has no NULL arrays: a missing array is an empty one
            if not isinstance(value, list | tuple):
                raise RowMismatch(f"{path}{name} must be a list, got {type(value).__name__}")
            out[name] = [_value(item, field, f"{path}{name}[{i}]") for i, item in enumerate(value)]
        elif value is None:
            if field.mode == "REQUIRED":
                raise RowMismatch(f"{path}{name} is required")
        else:
            out[name] = _value(value, field, path + name)
    return out


def _value(value: Any, field: bigquery.SchemaField, path: str) -> Any:
    kind = standard_type(field.field_type)
    if value is None:
        raise RowMismatch(f"{path} is NULL, which BigQuery does not allow in an array")
    if kind == "STRUCT":
        if not isinstance(value, Mapping):
            raise RowMismatch(f"{path} must be an object, got {type(value).__name__}")
        return _record(value, field.fields, path + ".")
    encode = _ENCODERS.get(kind)
    encoded = encode(value) if encode else None
    if encoded is None:
        raise RowMismatch(f"{path} expects {kind}, got {type(value).__name__} {value!r:.40}")
    return encoded


def _float(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _decimal(value: Any) -> str | None:
    # As text, so no digit is lost to a JSON float on the way.
    return str(value) if isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool) else None


def _timestamp(value: Any) -> str | None:
    if not isinstance(value, dt.datetime):
        return None
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).isoformat()


def _json(value: Any) -> Any:
    # A str is JSON text (as DuckDB's JSON type takes it); anything else is the value itself.
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def _datetime(value: Any) -> str | None:
    if not isinstance(value, dt.datetime):
        return None
    return (value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value).isoformat()


_ENCODERS: dict[str, Callable[[Any], Any]] = {
    "STRING": lambda v: v if isinstance(v, str) else None,
    "INT64": lambda v: int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else None,
    "FLOAT64": _float,
    "NUMERIC": _decimal,
    "BIGNUMERIC": _decimal,
    "BOOL": lambda v: v if isinstance(v, bool) else None,
    "DATE": lambda v: v.isoformat() if isinstance(v, dt.date) and not isinstance(v, dt.datetime) else None,
    "TIMESTAMP": _timestamp,
    "DATETIME": _datetime,
    "TIME": lambda v: v.isoformat() if isinstance(v, dt.time) else None,
    "BYTES": lambda v: base64.b64encode(v).decode() if isinstance(v, bytes | bytearray) else None,
    "JSON": _json,
    "GEOGRAPHY": lambda v: v if isinstance(v, str) else None,
}


# -- Arrow data for load jobs ----------------------------------------------------------------------------


def arrow_column_type(kind: pa.DataType, name: str) -> str:
    """The GoogleSQL type a column of Arrow data gets in a table created from that data."""
    if pa.types.is_dictionary(kind):
        return arrow_column_type(kind.value_type, name)
    if pa.types.is_boolean(kind):
        return "BOOL"
    if pa.types.is_integer(kind):
        return "INT64"
    if pa.types.is_floating(kind):
        return "FLOAT64"
    if pa.types.is_decimal(kind):
        return "NUMERIC" if kind.scale <= 9 and kind.precision - kind.scale <= 29 else "BIGNUMERIC"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        return "STRING"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return "BYTES"
    if pa.types.is_date(kind):
        return "DATE"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP" if kind.tz else "DATETIME"
    if pa.types.is_time(kind):
        return "TIME"
    if pa.types.is_struct(kind):
        inner = ", ".join(
            f"{quote_identifier(kind.field(i).name)} {arrow_column_type(kind.field(i).type, name)}"
            for i in range(kind.num_fields)
        )
        return f"STRUCT<{inner}>"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if pa.types.is_list(kind.value_type) or pa.types.is_large_list(kind.value_type):
            raise BadRequest(f"column {name}: BigQuery has no arrays of arrays", code="schema_mismatch")
        return f"ARRAY<{arrow_column_type(kind.value_type, name)}>"
    raise BadRequest(f"column {name}: Arrow type {kind} has no BigQuery counterpart", code="schema_mismatch")


def _arrow_type(field: bigquery.SchemaField) -> pa.DataType:
    kind = standard_type(field.field_type)
    if kind == "STRUCT":
        base: pa.DataType = pa.struct([pa.field(child.name, _arrow_type(child)) for child in field.fields])
    else:
        base = {
            "STRING": pa.string(), "INT64": pa.int64(), "FLOAT64": pa.float64(), "BOOL": pa.bool_(),
            "NUMERIC": pa.decimal128(38, 9), "BIGNUMERIC": pa.decimal256(76, 38), "DATE": pa.date32(),
            "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATETIME": pa.timestamp("us"), "TIME": pa.time64("us"),
            "BYTES": pa.binary(),
        }.get(kind, pa.string())  # fmt: skip
    return pa.list_(base) if field.mode == "REPEATED" else base


def _plain(data: pa.Table) -> pa.Table:
    """Decode dictionary columns and give all-NULL columns a type BigQuery has."""
    columns = []
    for column in data.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_null(column.type):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.table(columns, names=data.column_names)


def fit_to_table(data: pa.Table, fields: Sequence[bigquery.SchemaField]) -> pa.Table:
    """The data's columns in the table's order, NULL for the table's columns the data lacks.

    Columns are matched by name (as BigQuery does for Parquet); a column the table lacks is refused.
    """
    names = [field.name for field in fields]
    unknown = [name for name in data.column_names if name not in names]
    if unknown:
        raise BadRequest(f"columns not in the table: {', '.join(unknown)}", code="schema_mismatch")
    columns = [
        data.column(field.name)
        if field.name in data.column_names
        else pa.nulls(data.num_rows, _arrow_type(field))
        for field in fields
    ]
    return pa.table(columns, names=names)


def parquet_bytes(data: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(data, buffer, coerce_timestamps="us", allow_truncated_timestamps=True)
    return buffer.getvalue()


# -- errors ----------------------------------------------------------------------------------------------


def _reason(exc: gexc.GoogleAPICallError) -> str:
    for error in exc.errors or ():
        if isinstance(error, Mapping) and error.get("reason"):
            return str(error["reason"])
    return ""


def translate(exc: BaseException, *, data_error: bool = False) -> ConvergenceError:
    """A google-cloud error as the platform's: NotFound, BadRequest, transient, or terminal otherwise."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if isinstance(exc, _TRANSIENT_ERRORS):
        return DependencyUnavailable(f"BigQuery unavailable: {first}")
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return ConfigurationError(f"no usable Google credentials for BigQuery: {first}")
    if not isinstance(exc, gexc.GoogleAPICallError):
        return QueryFailed(f"BigQuery call failed: {first}")
    reason = _reason(exc)
    if reason in _TRANSIENT_REASONS or "concurrent update" in first or "Could not serialize access" in first:
        return DependencyUnavailable(f"BigQuery busy: {first}")
    if isinstance(exc, gexc.NotFound) or (isinstance(exc, gexc.Forbidden) and "does not exist" in first):
        # A query on a dataset that does not exist is a 403 accessDenied "... or perhaps it does not exist"
        # (for other projects in BigQuery, for every project in bqemulator).
        return NotFound(f"not found in the warehouse: {first}")
    if isinstance(exc, gexc.Forbidden):
        return ConfigurationError(f"BigQuery refused access: {first}")
    if isinstance(exc, gexc.Conflict):
        return Conflict(f"BigQuery conflict: {first}")
    if data_error and isinstance(exc, gexc.BadRequest):
        return BadRequest(f"data does not fit the table: {first}", code="schema_mismatch")
    return QueryFailed(f"warehouse rejected the statement: {first}")


# -- the adapter -----------------------------------------------------------------------------------------


class BigQueryWarehouse(Warehouse):
    """BigQuery through google-cloud-bigquery. Datasets live in `project`; jobs run in `location`."""

    name = "bigquery"

    def __init__(
        self,
        project: str,
        location: str,
        emulator_host: str | None = None,
        client: Any = None,
        *,
        job_timeout: float = 300.0,
        api_deadline: float = 60.0,
    ) -> None:
        self.project = project
        self.location = location
        self.emulator_host = emulator_host
        self.job_timeout = job_timeout
        self._client = client
        self._retry = bigquery.DEFAULT_RETRY.with_timeout(api_deadline)
        # After a 409 the job can be briefly invisible to get_job: retry its 404 as well.
        self._adopt_retry = gretry.Retry(
            predicate=gretry.if_exception_type(gexc.NotFound, gexc.ServerError, gexc.TooManyRequests),
            timeout=api_deadline,
        )
        # bqemulator 1.4 ignores queryParameters in multi-statement scripts and has no @@row_count.
        self._emulated_transactions = emulator_host is not None
        self._mutex = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def client(self) -> bigquery.Client:
        """The BigQuery client, created on first use."""
        if self._client is None:
            with self._mutex:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> bigquery.Client:
        if not self.emulator_host:
            return bigquery.Client(project=self.project, location=self.location)
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.emulator_host),
        )

    @contextmanager
    def _errors(self, *, data_error: bool = False) -> Iterator[None]:
        try:
            yield
        except _CLIENT_ERRORS as exc:
            raise translate(exc, data_error=data_error) from None

    def _job(self, kind: str, submit: Callable[[str], Any]) -> tuple[Any, Any]:
        """Submit a job under an id chosen here and wait for it: (the job, its result).

        A 409 Conflict means an earlier attempt of this very submission reached BigQuery (the client retries
        jobs.insert with the same id), so the job is adopted with get_job instead of running twice.
        """
        job_id = f"{JOB_PREFIX}_{kind}_{uuid.uuid4().hex}"
        try:
            job = submit(job_id)
        except gexc.Conflict:
            job = self.client.get_job(
                job_id, project=self.project, location=self.location, retry=self._adopt_retry
            )
        return job, job.result(timeout=self.job_timeout, retry=self._retry)

    def _query_job(self, sql: str, parameters: Sequence[QueryParameter] = ()) -> tuple[Any, Any]:
        config = bigquery.QueryJobConfig(query_parameters=list(parameters))
        return self._job(
            "query",
            lambda job_id: self.client.query(
                sql,
                job_config=config,
                job_id=job_id,
                location=self.location,
                retry=self._retry,
                job_retry=None,
            ),
        )

    def _run_internal(self, sql: str) -> None:
        """Run SQL the adapter wrote itself, from validated names only and without parameters."""
        with self._errors():
            self._query_job(sql)

    def _statement(self, sql: str, params: Params | None) -> tuple[Any, Any]:
        text, parameters = prepare(sql, params)
        with self._errors():
            return self._query_job(text, parameters)

    def _dataset(self, dataset: str) -> bigquery.DatasetReference:
        return bigquery.DatasetReference(self.project, dataset)

    def _table(self, dataset: str, table: str) -> bigquery.TableReference:
        return self._dataset(dataset).table(table)

    # -- datasets ---------------------------------------------------------------------------------------
    def ping(self) -> None:
        # A dry run costs nothing, stores no job and needs exactly the permission queries need.
        with self._errors():
            self.client.query(
                "SELECT 1",
                job_config=bigquery.QueryJobConfig(dry_run=True),
                retry=self._retry,
                job_retry=None,
            )

    def dataset_exists(self, dataset: str) -> bool:
        with self._errors():
            try:
                self.client.get_dataset(self._dataset(dataset), retry=self._retry)
            except gexc.NotFound:
                return False
        return True

    def create_dataset(self, dataset: str, *, recreate: bool = False) -> bool:
        existed = self.dataset_exists(dataset)
        if existed and not recreate:
            return False
        with self._errors():
            if existed:
                self.drop_dataset(dataset)
            entry = bigquery.Dataset(self._dataset(dataset))
            entry.location = self.location
            try:
                self.client.create_dataset(entry, retry=self._retry)
            except gexc.Conflict:
                return False  # created meanwhile by someone else
        return True

    def drop_dataset(self, dataset: str) -> None:
        with self._errors():
            self.client.delete_dataset(
                self._dataset(dataset), delete_contents=True, not_found_ok=True, retry=self._retry
            )

    # -- tables -----------------------------------------------------------------------------------------
    def _get_table(self, dataset: str, table: str) -> bigquery.Table:
        with self._errors():
            try:
                return self.client.get_table(self._table(dataset, table), retry=self._retry)
            except gexc.NotFound:
                raise NotFound(f"table {dataset}.{table} does not exist") from None

    def table_exists(self, dataset: str, table: str) -> bool:
        try:
            self._get_table(dataset, table)
        except NotFound:
            return False
        return True

    def create_table(self, dataset: str, schema: TableSchema, *, recreate: bool = False) -> bool:
        # DDL rather than tables.insert: CREATE OR REPLACE swaps a table atomically, and bqemulator enforces
        # NOT NULL only on tables created by DDL (its tables.insert drops REQUIRED on the floor).
        existed = self.table_exists(dataset, schema.name)
        if existed and not recreate:
            return False
        try:
            self._run_internal(create_table_ddl(dataset, schema, replace=existed))
        except Conflict:
            return False  # created meanwhile by someone else
        return True

    def list_tables(self, dataset: str) -> list[str]:
        with self._errors():
            try:
                tables = self.client.list_tables(self._dataset(dataset), retry=self._retry)
                names = [t.table_id for t in tables]
            except gexc.NotFound:
                return []
        return sorted(name for name in names if not name.startswith(INTERNAL_PREFIX))

    def table_columns(self, dataset: str, table: str) -> list[str]:
        return [field.name for field in self._get_table(dataset, table).schema]

    # -- statements -------------------------------------------------------------------------------------
    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        _, rows = self._statement(sql, params)
        with self._errors():
            return [dict(row.items()) for row in rows]

    def execute(self, sql: str, params: Params | None = None) -> int:
        job, _ = self._statement(sql, params)
        return int(job.num_dml_affected_rows or 0)

    def run_atomically(self, statements: Sequence[Statement]) -> list[int]:
        if not statements:
            return []
        if self._emulated_transactions:
            return self._run_emulated_transaction(statements)
        script, parameters = transaction_script(statements)
        with self._errors():
            _, rows = self._query_job(script, parameters)
            (row,) = list(rows)
        return [int(n) for n in row["row_counts"]]

    def _run_emulated_transaction(self, statements: Sequence[Statement]) -> list[int]:
        """All-or-nothing on bqemulator, which cannot bind parameters inside a script.

        Each table the statements write is copied first; the statements then run one by one as ordinary
        parameterised jobs; if one fails, every copied table gets its rows back in one script (which needs
        no parameters) and the error is raised. This mirrors bqemulator's own snapshot-based transactions;
        like them it does not isolate concurrent writers. Real BigQuery never takes this path.
        """
        snapshots: dict[str, str] = {}  # table → its copy, both as `dataset`.`table`
        try:
            for dataset, table in _dml_targets(statements):
                if self.table_exists(dataset, table):
                    copy = table_ref(dataset, f"{INTERNAL_PREFIX}txn_{uuid.uuid4().hex}")
                    self._run_internal(f"CREATE TABLE {copy} AS SELECT * FROM {table_ref(dataset, table)}")
                    snapshots[table_ref(dataset, table)] = copy
            try:
                return [self.execute(sql, params) for sql, params in statements]
            except BaseException:
                restore = " ".join(
                    f"DELETE FROM {target} WHERE TRUE; INSERT INTO {target} SELECT * FROM {copy};"
                    for target, copy in snapshots.items()
                )
                if restore:
                    self._run_internal(f"BEGIN TRANSACTION; {restore} COMMIT TRANSACTION;")
                raise
        finally:
            for copy in snapshots.values():
                try:
                    self._run_internal(f"DROP TABLE IF EXISTS {copy}")
                except ConvergenceError as exc:
                    log.warning("could not drop the transaction snapshot %s: %s", copy, exc.message)

    # -- loads ------------------------------------------------------------------------------------------
    def _load(
        self, destination: bigquery.TableReference, payload: bytes, config: bigquery.LoadJobConfig
    ) -> None:
        # No `size` argument: the client then uses a resumable upload (bqemulator rejects the multipart form).
        with self._errors(data_error=True):
            self._job(
                "load",
                lambda job_id: self.client.load_table_from_file(
                    io.BytesIO(payload),
                    destination,
                    job_id=job_id,
                    job_config=config,
                    location=self.location,
                    rewind=True,
                ),
            )

    def insert_rows(self, dataset: str, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        target = self._get_table(dataset, table)
        try:
            payload = ndjson_rows(rows, target.schema)
        except RowMismatch as exc:
            code = "unknown_columns" if "unknown columns" in str(exc) else "invalid_rows"
            raise BadRequest(f"rows do not fit {table}: {exc}", code=code) from None
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=target.schema,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        self._load(target.reference, payload, config)
        return len(rows)

    def load_arrow(self, dataset: str, table: str, data: pa.Table, *, mode: WriteMode = "append") -> int:
        if data.num_columns == 0:
            raise BadRequest(f"data for {table} has no columns", code="schema_mismatch")
        data = _plain(data)
        if mode == "append" and self.table_exists(dataset, table):
            return self._append_arrow(dataset, table, data)
        if not self.table_exists(dataset, table):
            try:
                self._create_from_arrow(dataset, table, data.schema)
            except Conflict:
                return self._append_arrow(dataset, table, data)  # created meanwhile: append to it
            try:
                return self._append_arrow(dataset, table, data)
            except ConvergenceError:
                self._drop_table(dataset, table)  # the failed load leaves no empty table behind
                raise
        # Replace: load a staging table, then swap it in with one atomic CREATE OR REPLACE ... AS SELECT, so
        # a failed load leaves the old table whole. (A WRITE_TRUNCATE load would be atomic in BigQuery, but
        # bqemulator keeps the old schema and empties the table even when that load fails.)
        staging = f"{INTERNAL_PREFIX}load_{uuid.uuid4().hex}"
        self._create_from_arrow(dataset, staging, data.schema)
        try:
            self._append_arrow(dataset, staging, data)
            self._run_internal(
                f"CREATE OR REPLACE TABLE {table_ref(dataset, table)} AS SELECT * FROM {table_ref(dataset, staging)}"
            )
        finally:
            self._drop_table(dataset, staging)
        return data.num_rows

    def _create_from_arrow(self, dataset: str, table: str, schema: pa.Schema) -> None:
        columns = ", ".join(f"{quote_identifier(f.name)} {arrow_column_type(f.type, f.name)}" for f in schema)
        self._run_internal(f"CREATE TABLE {table_ref(dataset, table)} ({columns})")

    def _append_arrow(self, dataset: str, table: str, data: pa.Table) -> int:
        # Ordered like the table: bqemulator maps Parquet columns by position, BigQuery by name.
        target = self._get_table(dataset, table)
        payload = parquet_bytes(fit_to_table(data, target.schema))
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        options = bigquery.ParquetOptions()
        options.enable_list_inference = True
        config.parquet_options = options
        self._load(target.reference, payload, config)
        return data.num_rows  # not the job's output_rows: bqemulator reports the table's total there

    def _drop_table(self, dataset: str, table: str) -> None:
        with self._errors():
            self.client.delete_table(self._table(dataset, table), not_found_ok=True, retry=self._retry)

    # -- locks ------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Serialise callers in this process only: BigQuery has no lock another instance would respect."""
        with self._mutex:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def close(self) -> None:
        with self._mutex:
            client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()


# -- multi-statement transactions ------------------------------------------------------------------------

ROW_COUNTS = "_convergence_row_counts"


def transaction_script(statements: Sequence[Statement]) -> tuple[str, list[QueryParameter]]:
    """One BigQuery script running the statements in a transaction and returning their affected rows.

    Parameters are renamed per statement (@s0_id, @s1_id, ...) because a script shares one parameter
    namespace; @@row_count after each statement is collected and selected last. An error rolls the
    transaction back: BigQuery aborts a script's open transaction when a statement fails.
    """
    lines = [f"DECLARE {ROW_COUNTS} ARRAY<INT64> DEFAULT [];", "BEGIN TRANSACTION;"]
    parameters: list[QueryParameter] = []
    for index, (sql, params) in enumerate(statements):
        text, bound = prepare(sql, params, prefix=f"s{index}_")
        last = _tokens(text)[-1]
        if last.token_type == TokenType.SEMICOLON:
            text = text[: last.start]
        # The terminator on a line of its own, so a trailing -- comment cannot swallow it.
        lines += [text.strip(), ";"]
        lines.append(f"SET {ROW_COUNTS} = ARRAY_CONCAT({ROW_COUNTS}, [IFNULL(@@row_count, 0)]);")
        parameters += bound
    lines += ["COMMIT TRANSACTION;", f"SELECT {ROW_COUNTS} AS row_counts;"]
    return "\n".join(lines), parameters


def _dml_targets(statements: Sequence[Statement]) -> list[tuple[str, str]]:
    """(dataset, table) of every table an INSERT, UPDATE, DELETE or MERGE among the statements writes."""
    targets: list[tuple[str, str]] = []
    for sql, _ in statements:
        try:
            trees = sqlglot.parse(sql, read="bigquery")
        except sqlglot.errors.ParseError:
            continue  # the statement itself will fail, with the parser's message
        for tree in trees:
            if not isinstance(tree, exp.Insert | exp.Update | exp.Delete | exp.Merge):
                continue
            table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if isinstance(table, exp.Table) and table.db and (table.db, table.name) not in targets:
                targets.append((table.db, table.name))
    return targets
