"""Billing files (CSV, NDJSON, Parquet) from a local path under the source roots or a gs:// URI, as Arrow.

A location is one file, or a folder (a directory, or a gs:// prefix) whose files of a supported kind are
read in name order and stacked; their columns are unioned, a column a file lacks is NULL in its rows.
Every column lands as STRING: costs and dates are typed later, in SQL, with SAFE_CAST, so a stray value
never fails a load. Column names are made warehouse-safe (`snake_case` turns AWS's `lineItem/UnblendedCost`
and Azure's `CostInBillingCurrency` into `line_item_unblended_cost` and `cost_in_billing_currency`).

Local paths are confined: a path, once its symlinks are resolved, must lie inside one of the configured
source roots, or the read is refused (`source_forbidden`) — a tenant must never read the server's files.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from common.errors import TerminalError
from common.settings import Settings
from common.sources.columns import ColumnNames, rename_columns

Format = Literal["auto", "csv", "ndjson", "parquet"]
SOURCE_FILE_COLUMN = "_source_file"
NULL_VALUES = ["", "NULL", "null"]
# Name endings per format; a folder is read only for these (an AWS CUR folder also holds manifest .json files).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "csv": (".csv", ".csv.gz"),
    "ndjson": (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz"),
    "parquet": (".parquet",),
}
_GZIP_MAGIC = b"\x1f\x8b"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class SourceFile:
    """One file of a location: the name recorded in `_source_file`, its format and how to fetch its bytes."""

    name: str
    format: str
    fetch: Callable[[], bytes]


@dataclass(frozen=True)
class LoadedFiles:
    """The stacked rows of a location's files, every column STRING, plus `_source_file`."""

    table: pa.Table
    files: list[str]


# -- formats and column names ----------------------------------------------------------------------------


def format_of(name: str, declared: Format) -> str | None:
    """The format a file is read as: the declared one, else by its name ending (None when unknown)."""
    if declared != "auto":
        return declared
    lowered = name.lower()
    for fmt, endings in EXTENSIONS.items():
        if lowered.endswith(endings):
            return fmt
    return None


def _belongs_in_folder(name: str, declared: Format) -> bool:
    """Whether a file met while listing a folder is read: a supported ending, not hidden (., _SUCCESS)."""
    base = name.rsplit("/", 1)[-1]
    if not base or base[0] in "._":
        return False
    endings = EXTENSIONS[declared] if declared != "auto" else sum(EXTENSIONS.values(), ())
    return base.lower().endswith(endings)


# -- parsing: every column as STRING ---------------------------------------------------------------------


def _unpacked(data: bytes, name: str) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise TerminalError(
            f"{name} is not a readable gzip file: {exc}", code="invalid_source_file"
        ) from None


def _read_csv(data: bytes) -> pa.Table:
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    header = next(csv.reader(stream), None)
    if not header:
        return pa.table({})
    return pa_csv.read_csv(
        pa.BufferReader(data),
        read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={column: pa.string() for column in header},
            null_values=NULL_VALUES,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _read_ndjson(data: bytes, name: str) -> pa.Table:
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise TerminalError(
                f"{name} line {number} is not valid JSON", code="invalid_source_file"
            ) from None
        if not isinstance(row, dict):
            raise TerminalError(f"{name} line {number} is not a JSON object", code="invalid_source_file")
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return pa.table({c: pa.array([_json_text(r.get(c)) for r in rows], pa.string()) for c in columns})


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _as_text(column.cast(kind.value_type))
    if pa.types.is_string(kind):
        return column
    if pa.types.is_map(kind):
        return pa.array([None if v is None else _json_text(dict(v)) for v in column.to_pylist()], pa.string())
    if pa.types.is_nested(kind):
        return pa.array([_json_text(v) for v in column.to_pylist()], pa.string())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        try:
            return pc.cast(column, pa.string())
        except pa.ArrowInvalid:  # not UTF-8: keep the bytes, base64-encoded
            return pa.array([None if v is None else base64.b64encode(v).decode() for v in column.to_pylist()])
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


def parse_file(data: bytes, fmt: str, name: str) -> pa.Table:
    """One file's rows with every column as STRING (nested Parquet values as JSON text)."""
    try:
        if fmt == "parquet":
            table = pq.read_table(pa.BufferReader(data))
            return pa.table([_as_text(c) for c in table.columns], names=table.column_names)
        data = _unpacked(data, name)
        return _read_csv(data) if fmt == "csv" else _read_ndjson(data, name)
    except TerminalError:
        raise
    except (pa.ArrowException, OSError, ValueError, csv.Error) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TerminalError(f"{name} is not valid {fmt}: {first}", code="invalid_source_file") from None


# -- locations -------------------------------------------------------------------------------------------


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _local_files(location: str, roots: Sequence[Path], declared: Format) -> list[SourceFile]:
    """The files of a local location, refusing anything that resolves outside the source roots."""
    raw = location.removeprefix("file://")
    if not raw or "\x00" in raw:
        raise TerminalError(f"{location!r} is not a valid path", code="invalid_location")
    given = Path(raw) if Path(raw).is_absolute() else roots[0] / raw
    forbidden = TerminalError(
        f"{location} is outside the directories file sources may read", code="source_forbidden"
    )
    resolved = Path(os.path.realpath(given))
    if not _inside(resolved, roots):
        raise forbidden
    if resolved.is_file():
        fmt = format_of(given.name, declared)
        if fmt is None:
            raise TerminalError(
                f"{location}: cannot tell the format from the name; set format to csv, ndjson or parquet",
                code="unsupported_format",
            )
        return [SourceFile(str(given), fmt, resolved.read_bytes)]
    if not resolved.is_dir():
        raise TerminalError(f"{location} does not exist", code="source_not_found")
    found: list[SourceFile] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(given, followlinks=True):
        real_folder = os.path.realpath(folder)
        if not _inside(Path(real_folder), roots):
            raise forbidden
        if real_folder in seen:  # a symlink loop: this folder was read already
            dirs.clear()
            continue
        seen.add(real_folder)
        dirs.sort()
        for name in names:
            path = Path(folder) / name
            if not _belongs_in_folder(name, declared):
                continue
            real = Path(os.path.realpath(path))
            if not _inside(real, roots):
                raise forbidden
            if real.is_file():
                found.append(SourceFile(str(path), format_of(name, declared) or declared, real.read_bytes))
    return sorted(found, key=lambda f: f.name)


def _gcs_files(location: str, declared: Format, reader: Any) -> list[SourceFile]:
    objects = reader.list(location)
    if len(objects) == 1 and objects[0].uri == location.rstrip("/"):
        fmt = format_of(objects[0].name, declared)
        if fmt is None:
            raise TerminalError(
                f"{location}: cannot tell the format from the name; set format to csv, ndjson or parquet",
                code="unsupported_format",
            )
        return [SourceFile(objects[0].uri, fmt, lambda item=objects[0]: reader.read(item))]
    return [
        SourceFile(item.uri, format_of(item.name, declared) or declared, lambda item=item: reader.read(item))
        for item in objects
        if _belongs_in_folder(item.name, declared)
    ]


def list_location(
    location: str, settings: Settings, declared: Format, gcs: Callable[[], Any], tenant_id: str | None = None
) -> list[SourceFile]:
    """The files a location names, sorted; none is `source_empty`.

    With a tenant, local paths are confined to that tenant's folder of each source root
    (`<root>/<tenant_id>/`), so one tenant can never name another tenant's files.
    """
    location = location.strip()
    scheme = _SCHEME.match(location)
    if location.startswith("gs://"):
        from common.sources.gcs import parse_gcs_uri

        parse_gcs_uri(location)
        files = _gcs_files(location, declared, gcs())
    elif scheme and scheme.group(1) != "file":
        raise TerminalError(
            f"{scheme.group(1)}:// locations are not supported; use gs://bucket/path or a path under the source roots",
            code="unsupported_location",
        )
    else:
        roots = settings.source_roots
        files = _local_files(location, [root / tenant_id for root in roots] if tenant_id else roots, declared)
    if not files:
        raise TerminalError(f"no csv, ndjson or parquet files at {location}", code="source_empty")
    return files


def _refuse_case_clashes(names: Sequence[str], location: str) -> None:
    """Columns of different files that differ only in case would be one column in the warehouse."""
    seen: dict[str, list[str]] = {}
    for name in names:
        seen.setdefault(name.lower(), []).append(name)
    clashes = ["/".join(found) for found in seen.values() if len(found) > 1]
    if clashes:
        raise TerminalError(
            f"files at {location} name columns differing only in case: {', '.join(clashes)}",
            code="column_collision",
        )


def read_upload(
    data: bytes,
    fmt: str,
    *,
    column_names: ColumnNames,
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    name: str = "the upload",
) -> pa.Table:
    """An uploaded file read the way `read_location` reads a file of a location: all STRING, renamed by
    `column_names`, `required` columns present, absent `optional` ones added as NULL, `_source_file` set
    to `name`. So a raw table holds the same columns whether its rows were uploaded or loaded."""
    table = parse_file(data, fmt, name)
    table = table.rename_columns(
        rename_columns(table.column_names, column_names, name, added=(SOURCE_FILE_COLUMN,))
    )
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise TerminalError(f"{name} lacks required columns: {', '.join(missing)}", code="missing_columns")
    for column in optional:
        if column not in table.column_names:
            table = table.append_column(column, pa.nulls(table.num_rows, pa.string()))
    return table.append_column(SOURCE_FILE_COLUMN, pa.array([name] * table.num_rows, pa.string()))


def read_location(
    location: str,
    settings: Settings,
    *,
    declared: Format = "auto",
    column_names: ColumnNames = "snake_case",
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    gcs: Callable[[], Any] | None = None,
    tenant_id: str | None = None,
) -> LoadedFiles:
    """Read every file of a location into one all-STRING table with a `_source_file` column.

    `required` columns (named after renaming) must be in every file that has columns, else the error names
    the file and what it lacks; `optional` columns absent from all files are added as NULL.
    """
    if gcs is None:

        def gcs() -> Any:
            from common.sources.gcs import GcsReader

            return GcsReader.from_settings(settings)

    tables: list[pa.Table] = []
    files = list_location(location, settings, declared, gcs, tenant_id)
    for file in files:
        try:
            data = file.fetch()
        except OSError as exc:
            raise TerminalError(
                f"{file.name} cannot be read: {exc.strerror or exc}", code="source_unreadable"
            ) from None
        table = parse_file(data, file.format, file.name)
        table = table.rename_columns(
            rename_columns(table.column_names, column_names, file.name, added=(SOURCE_FILE_COLUMN,))
        )
        missing = [c for c in required if c not in table.column_names]
        if missing and table.num_columns:
            raise TerminalError(
                f"{file.name} lacks required columns: {', '.join(missing)}",
                code="missing_columns",
                columns=missing,
            )
        source = pa.array([file.name] * table.num_rows, pa.string())
        tables.append(table.append_column(SOURCE_FILE_COLUMN, source))
    combined = pa.concat_tables(tables, promote_options="default")
    _refuse_case_clashes(combined.column_names, location)
    absent = [c for c in required if c not in combined.column_names]
    if absent:
        raise TerminalError(
            f"{location} lacks required columns: {', '.join(absent)}", code="missing_columns", columns=absent
        )
    for column in optional:
        if column not in combined.column_names:
            combined = combined.append_column(column, pa.nulls(combined.num_rows, pa.string()))
    ordered = [c for c in combined.column_names if c != SOURCE_FILE_COLUMN] + [SOURCE_FILE_COLUMN]
    return LoadedFiles(combined.select(ordered), [f.name for f in files])
