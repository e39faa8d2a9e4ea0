"""Rows appended through the BigQuery Storage Write API's default stream, not a load job each.

BigQuery allows 100,000 load jobs per project and day and 1,500 table modifications per table and day; a
run writes about ten records (its status, each step, data-quality results), so records as load jobs would
spend the project's load quota at a few thousand runs a day. An append to a table's default stream
(`projects/P/datasets/D/tables/T/streams/_default`) is committed at once, is no job, and counts against
the Storage Write API's throughput (3 GB/s per project in a multi-region) and concurrent connections
(10,000 in a multi-region, 1,000 in a region) instead. Each append here is one short AppendRows stream:
rows as one Arrow record batch in the table's own schema, one response read, the stream closed.

Delivery is at least once: an append whose answer was lost may have been committed, and the caller's
retry (the step's redelivery) writes it again. The record tables are read latest-record-wins by a
sequence number, so a duplicate changes nothing a reader sees.

With BIGQUERY_EMULATOR_HOST set the appends go to bqemulator's gRPC endpoint, which the platform starts at
the REST port + 1 (`STORAGE_PORT_OFFSET`), over a plain channel with no credentials, one request at a
time with the REST calls (`common.warehouse.emulator_gate`: the emulator deadlocks on the two at once).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from common.errors import BadRequest, DependencyUnavailable, NotFound
from common.warehouse.bigquery_codec import RowMismatch, standard_type
from common.warehouse.emulator_gate import gate_for

STORAGE_PORT_OFFSET = 1
APPEND_TIMEOUT = 60.0  # seconds for one append's answer

_SCALARS: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIME": pa.time64("us"),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
}


def storage_endpoint(emulator_host: str) -> str:
    """host:port of the emulator's Storage API, beside its REST endpoint `http://host:port`."""
    parts = urlsplit(emulator_host if "//" in emulator_host else f"http://{emulator_host}")
    return f"{parts.hostname}:{(parts.port or 80) + STORAGE_PORT_OFFSET}"


def arrow_type(field: bigquery.SchemaField) -> pa.DataType | None:
    """The Arrow type a column is appended as; None for nested, repeated or JSON-like columns."""
    if field.mode == "REPEATED":
        return None
    return _SCALARS.get(standard_type(field.field_type))


def arrow_schema(fields: Sequence[bigquery.SchemaField]) -> pa.Schema | None:
    """The table's schema in Arrow, or None when a column is not a plain scalar.

    The record tables are flat (strings, integers, timestamps); a table with nested, repeated, JSON or
    GEOGRAPHY columns (provider exports) is written by a load job of all its rows at once instead.
    """
    columns = []
    for field in fields:
        kind = arrow_type(field)
        if kind is None:
            return None
        columns.append(pa.field(field.name, kind, nullable=field.mode != "REQUIRED"))
    return pa.schema(columns)


def arrow_rows(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Rows (already checked against the table by `bigquery_codec`) as one record batch of `schema`."""
    columns = []
    for column in schema:
        values = [_plain(row.get(column.name)) for row in rows]
        try:
            columns.append(pa.array(values, type=column.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise RowMismatch(f"{column.name}: {exc}") from None
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _plain(value: Any) -> Any:
    # A naive datetime is UTC here, as everywhere in the platform (Arrow would read it as a local time).
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class StorageWriter:
    """Appends record batches to tables' default streams (one client per adapter, created on first use)."""

    def __init__(self, project: str, emulator_host: str | None) -> None:
        self.project = project
        self.emulator_host = emulator_host
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        from google.cloud import bigquery_storage_v1

        if not self.emulator_host:
            return bigquery_storage_v1.BigQueryWriteClient()
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
            BigQueryWriteGrpcTransport,
        )

        channel = grpc.insecure_channel(storage_endpoint(self.emulator_host))
        return bigquery_storage_v1.BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))

    def append(self, table: bigquery.TableReference, batch: pa.RecordBatch) -> int:
        """Append `batch` to the table's default stream; the rows are committed when this returns."""
        from google.cloud.bigquery_storage_v1 import types

        stream = (
            f"projects/{table.project}/datasets/{table.dataset_id}/tables/{table.table_id}/streams/_default"
        )
        request = types.AppendRowsRequest(
            write_stream=stream,
            arrow_rows=types.AppendRowsRequest.ArrowData(
                writer_schema=types.ArrowSchema(serialized_schema=batch.schema.serialize().to_pybytes()),
                rows=types.ArrowRecordBatch(serialized_record_batch=batch.serialize().to_pybytes()),
            ),
        )
        metadata = (("x-goog-request-params", f"write_stream={stream}"),)
        try:
            with gate_for(self.emulator_host).held() if self.emulator_host else nullcontext():
                responses = self.client.append_rows(iter([request]), metadata=metadata, timeout=APPEND_TIMEOUT)
                answers = list(responses)  # the stream ends once the server answered the one request
            answer = answers[0] if answers else None
        except gexc.NotFound:
            raise NotFound(f"table {table.dataset_id}.{table.table_id} not found") from None
        except (gexc.InvalidArgument, gexc.FailedPrecondition) as exc:
            raise BadRequest(
                f"rows do not fit {table.table_id}: {exc.message}", code="invalid_rows"
            ) from None
        except gexc.GoogleAPIError as exc:
            raise DependencyUnavailable(f"BigQuery Storage Write API unavailable: {exc}") from None
        if answer is None:
            raise DependencyUnavailable("BigQuery Storage Write API closed the stream without an answer")
        if answer.row_errors:
            first = answer.row_errors[0]
            raise BadRequest(
                f"rows do not fit {table.table_id}: row {first.index}: {first.message}", code="invalid_rows"
            )
        if answer.error and answer.error.code:
            raise DependencyUnavailable(
                f"BigQuery Storage Write API refused the append: {answer.error.message}"
            )
        return batch.num_rows

    def close(self) -> None:
        if self._client is not None:
            self._client.transport.close()
            self._client = None
