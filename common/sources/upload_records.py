"""The rows of an uploaded CSV, NDJSON or Parquet body as Python values, before any type is given to them.

What a table's definition then makes of them is common.sources.declared_schema's business; here each format
is only read faithfully:

- CSV: every cell is text, exactly as written. An empty cell is NULL; a quoted empty cell (`""`) is an empty
  string. The first line names the columns.
- NDJSON: one JSON object per line (blank lines are skipped). Numbers with a fraction or an exponent are read
  as decimals, never through a binary float, so a NUMERIC column gets exactly the digits written.
- Parquet: the file's own typed values (nanosecond timestamps are cut to microseconds, BigQuery's precision).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from common.errors import BadRequest

UploadFormat = Literal["csv", "ndjson", "parquet"]


@dataclass(frozen=True)
class UploadRecords:
    """An upload's column names (in the order first seen) and its rows, one dict per row."""

    format: UploadFormat
    names: list[str]
    rows: list[dict[str, Any]]


def _invalid(kind: str, exc: BaseException) -> BadRequest:
    text = str(exc).strip()
    message = text.splitlines()[0][:300] if text else type(exc).__name__
    return BadRequest(f"the body is not valid {kind}: {message}", code="invalid_upload")


def read_csv_text(body: bytes) -> pa.Table:
    """A CSV body as Arrow with every column as text: empty cells NULL, quoted empty cells empty strings."""
    try:
        names = pa_csv.open_csv(io.BytesIO(body)).schema.names
        options = pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            strings_can_be_null=True,
            null_values=[""],
            quoted_strings_can_be_null=False,
        )
        return pa_csv.read_csv(io.BytesIO(body), convert_options=options)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _invalid("csv", exc) from None


def _csv_records(body: bytes) -> UploadRecords:
    data = read_csv_text(body)
    return UploadRecords("csv", data.column_names, data.to_pylist())


def _ndjson_records(body: bytes) -> UploadRecords:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid("ndjson", exc) from None
    rows: list[dict[str, Any]] = []
    names: dict[str, None] = {}
    # Split on line feeds only: str.splitlines would also cut at U+2028, which a JSON string may hold.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            raise BadRequest(
                f"the body is not valid ndjson: line {number}: {exc}", code="invalid_upload"
            ) from None
        if not isinstance(value, dict):
            raise BadRequest(
                f"the body is not valid ndjson: line {number} is not a JSON object", code="invalid_upload"
            )
        names.update(dict.fromkeys(value))
        rows.append(value)
    return UploadRecords("ndjson", list(names), rows)


def _microseconds(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        return pc.cast(column, pa.timestamp("us", tz=kind.tz), safe=False)
    return column


def _parquet_records(body: bytes) -> UploadRecords:
    try:
        data = pq.read_table(io.BytesIO(body))
        data = pa.table([_microseconds(c) for c in data.columns], names=data.column_names)
        rows = data.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _invalid("parquet", exc) from None
    return UploadRecords("parquet", data.column_names, rows)


_READERS: dict[str, Callable[[bytes], UploadRecords]] = {
    "csv": _csv_records,
    "ndjson": _ndjson_records,
    "parquet": _parquet_records,
}


def read_records(kind: UploadFormat, body: bytes) -> UploadRecords:
    """The body's columns and rows; a body that is not valid `kind` is refused (400 invalid_upload)."""
    return _READERS[kind](body)
