"""BigQuery warehouse: google-cloud-bigquery jobs with client-chosen ids; values only as query parameters.

Writes are idempotent under retry: every job gets an id chosen here, so a jobs.insert that reached BigQuery
but whose answer was lost comes back as 409 Conflict on retry, and the adapter then adopts the existing
job (get_job) instead of running it twice. `insert_rows` (run, step and data-quality records) appends to
the table's default stream of the Storage Write API (common.warehouse.bigquery_write): no load job per
record, and rows written so can be DELETEd at once, unlike the legacy streaming buffer. Files and Arrow
data are written by load jobs.

With BIGQUERY_EMULATOR_HOST set the client talks to bqemulator with anonymous credentials. bqemulator
does not bind query parameters inside multi-statement scripts, so there `run_atomically` uses the
emulated transaction of common.warehouse.bigquery_transactions; everything else is one code path.

This module holds the adapter; errors are translated in bigquery_errors, query parameters are built in
bigquery_params, row and Arrow payloads in bigquery_codec and DDL in bigquery_ddl.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pyarrow as pa
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import bigquery

from common.errors import (
    BadRequest,
    Conflict,
    ConvergenceError,
    NotFound,
)
from common.warehouse import bigquery_write
from common.warehouse.base import KeyedLocks, Params, Statement, Warehouse, WriteMode, report_bytes
from common.warehouse.bigquery_codec import (
    INTERNAL_PREFIX,
    RowMismatch,
    arrow_column_type,
    checked_rows,
    fit_to_table,
    ndjson_rows,
    parquet_bytes,
    plain_arrow,
    table_definition,
)
from common.warehouse.bigquery_ddl import create_table_ddl
from common.warehouse.bigquery_errors import CLIENT_ERRORS, translate
from common.warehouse.bigquery_params import QueryFailed, QueryParameter, prepare, query_parameter
from common.warehouse.bigquery_transactions import run_emulated_transaction, transaction_script
from common.warehouse.emulator_gate import gate_for
from common.warehouse.schema import TableSchema
from common.warehouse.sql import quote_identifier, table_ref

# The adapter, and the codec and transaction names its importers (tests among them) take from here.
__all__ = [
    "INTERNAL_PREFIX",
    "JOB_PREFIX",
    "BigQueryWarehouse",
    "QueryFailed",
    "RowMismatch",
    "create_table_ddl",
    "ndjson_rows",
    "prepare",
    "query_parameter",
    "transaction_script",
    "translate",
]

JOB_PREFIX = "convergence"
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
        self._key_locks = KeyedLocks()
        self._writer: bigquery_write.StorageWriter | None = None

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def client(self) -> bigquery.Client:
        """The BigQuery client, created on first use."""
        if self._client is None:
            with self._mutex:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    @property
    def writer(self) -> bigquery_write.StorageWriter:
        """Appends to tables' default streams (Storage Write API), created on first use."""
        if self._writer is None:
            with self._mutex:
                if self._writer is None:
                    self._writer = bigquery_write.StorageWriter(self.project, self.emulator_host)
        return self._writer

    def _make_client(self) -> bigquery.Client:
        if not self.emulator_host:
            return bigquery.Client(project=self.project, location=self.location)
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        client = bigquery.Client(
            project=self.project,
            location=self.location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.emulator_host),
        )
        http = client._http  # the client's requests session: one request at a time to the emulator
        http.request = gate_for(self.emulator_host).wrap(http.request)
        return client

    @contextmanager
    def _errors(self, *, data_error: bool = False) -> Iterator[None]:
        try:
            yield
        except CLIENT_ERRORS as exc:
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
        result = job.result(timeout=self.job_timeout, retry=self._retry)
        report_bytes(getattr(job, "total_bytes_processed", None))  # query jobs only; loads process none
        return job, result

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

    def create_dataset(
        self, dataset: str, *, recreate: bool = False, labels: Mapping[str, str] | None = None
    ) -> bool:
        existed = self.dataset_exists(dataset)
        if existed and not recreate:
            if labels:
                self._label(dataset, labels)
            return False
        with self._errors():
            if existed:
                self.drop_dataset(dataset)
            entry = bigquery.Dataset(self._dataset(dataset))
            entry.location = self.location
            entry.labels = dict(labels or {})
            try:
                self.client.create_dataset(entry, retry=self._retry)
            except gexc.Conflict:
                return False  # created meanwhile by someone else
        return True

    def _label(self, dataset: str, labels: Mapping[str, str]) -> None:
        """Add `labels` to an existing dataset (others it carries are kept)."""
        with self._errors():
            entry = self.client.get_dataset(self._dataset(dataset), retry=self._retry)
            if any(entry.labels.get(key) != value for key, value in labels.items()):
                entry.labels = {**entry.labels, **labels}
                self.client.update_dataset(entry, ["labels"], retry=self._retry)

    def dataset_labels(self, dataset: str) -> dict[str, str]:
        """The dataset's labels."""
        with self._errors():
            return dict(self.client.get_dataset(self._dataset(dataset), retry=self._retry).labels)

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

    def table_schema(self, dataset: str, table: str) -> TableSchema:
        return table_definition(table, self._get_table(dataset, table).schema)

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
            return run_emulated_transaction(self, statements)
        script, parameters = transaction_script(statements)
        with self._errors():
            _, rows = self._query_job(script, parameters)
            (row,) = list(rows)
        return [int(n) for n in row["row_counts"]]

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
        schema = bigquery_write.arrow_schema(target.schema)
        try:
            if schema is not None:  # records: the Storage Write API's default stream, no load job
                checked_rows(rows, target.schema)
                batch = bigquery_write.arrow_rows(rows, schema)
            else:
                payload = ndjson_rows(rows, target.schema)
        except RowMismatch as exc:
            code = "unknown_columns" if "unknown columns" in str(exc) else "invalid_rows"
            raise BadRequest(f"rows do not fit {table}: {exc}", code=code) from None
        if schema is not None:
            return self.writer.append(target.reference, batch)
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
        data = plain_arrow(data)
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
    def lock(self, key: str) -> AbstractContextManager[None]:
        """Serialise callers in this process only: BigQuery has no lock another instance would respect."""
        return self._key_locks.hold(key)

    def close(self) -> None:
        with self._mutex:
            client, self._client = self._client, None
            writer, self._writer = self._writer, None
        if client is not None and hasattr(client, "close"):
            client.close()
        if writer is not None:
            writer.close()
