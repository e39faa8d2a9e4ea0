"""Tenant data: upload CSV/NDJSON/Parquet into the tenant's dataset, list tables, page through rows.

An upload gets its types from, in this order:

0. the template that loads the table, for the raw table of a source.files step (aws_cur_raw, azure_cost_raw,
   focus_raw): read as that step reads its files (common.services.raw_uploads), so the template runs on it;
1. the table's declaration in configs/schemas/tenant/ (the tables templates read and write): the upload is
   converted to exactly that definition (common.sources.declared_schema says how) or refused whole, and a
   table it creates or replaces is created from the declaration (partitioning, REQUIRED and all);
2. the table as it already is, for an append to a table nobody declared: the upload is converted to its
   types or refused naming the row, the column and both types;
3. inference from the data (pyarrow's), for a new undeclared table or a replaced one.

Every check runs on the whole upload before anything is written: a refused upload leaves the table as it was.
"""

from __future__ import annotations

import io
import re
import uuid
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from common.errors import BadRequest, ConfigurationError, NotFound, UnsupportedMediaType
from common.metadata.schemas import load_schema, schema_names
from common.runtime import Runtime
from common.services.raw_uploads import read_raw_upload
from common.sources.columns import rename_columns
from common.sources.declared_schema import fit_upload, schema_differences
from common.sources.upload_records import UploadFormat, read_records
from common.tenancy import METADATA_TABLES, validate_table_name
from common.warehouse.base import INTERNAL_PREFIX, Warehouse, WriteMode
from common.warehouse.schema import TableSchema
from common.warehouse.sql import quote_identifier, table_ref

CONTENT_TYPES: dict[str, UploadFormat] = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/vnd.apache.parquet": "parquet",
}
MAX_PAGE = 1000
# An upload into one table holds it across instances while it checks and writes (a load of a large file).
UPLOAD_LEASE_SECONDS = 300.0
TypesFrom = Literal["template", "declared", "table", "inferred"]


def upload_format(content_type: str | None, body: bytes) -> UploadFormat:
    """The format a Content-Type names; 415 for any other, 400 for an empty body."""
    kind = CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if kind is None:
        raise UnsupportedMediaType(f"Content-Type must be one of: {', '.join(CONTENT_TYPES)}")
    if not body:
        raise BadRequest("the upload is empty", code="empty_upload")
    return kind


def parse_upload(content_type: str | None, body: bytes) -> pa.Table:
    """Parse an upload body by its Content-Type, inferring each column's type from the data."""
    kind = upload_format(content_type, body)
    try:
        if kind == "csv":
            return pa_csv.read_csv(io.BytesIO(body))
        if kind == "ndjson":
            return pa_json.read_json(io.BytesIO(body))
        return pq.read_table(io.BytesIO(body))
    except (pa.ArrowException, OSError, ValueError) as exc:
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise BadRequest(f"the body is not valid {kind}: {message}", code="invalid_upload") from None


def declared_schema(table: str) -> TableSchema | None:
    """The definition configs/schemas/tenant/ declares for a tenant table, or None."""
    return load_schema("tenant", table) if table in schema_names("tenant") else None


def _write_mode(mode: str | None) -> WriteMode:
    if mode in (None, "", "append"):
        return "append"
    if mode == "replace":
        return "replace"
    raise BadRequest("mode must be append or replace", code="invalid_mode")


def upload(
    rt: Runtime, org: str, table: str, content_type: str | None, body: bytes, mode: str | None
) -> dict:
    """Load an upload into the tenant's table (append by default, or replace it whole)."""
    validate_table_name(table)
    if table in METADATA_TABLES:
        raise BadRequest(
            f"{table} is maintained by the platform and cannot be uploaded into", code="reserved_table"
        )
    write_mode = _write_mode(mode)
    kind = upload_format(content_type, body)
    wh = rt.warehouse
    raw = read_raw_upload(table, kind, body)
    if raw is not None:
        with rt.claims.hold(f"upload/{org}/{table}", lease=UPLOAD_LEASE_SECONDS):
            rows = _write_raw(wh, org, table, raw, write_mode)
        return {"table": table, "rows_loaded": rows, "mode": write_mode, "renamed_columns": {},
                "types_from": "template"}  # fmt: skip
    declared = declared_schema(table)
    # Checked whole before the table is even looked at.
    fitted = (
        fit_upload(read_records(kind, body), declared, table=table, origin=_declared_in(table))
        if declared
        else None
    )
    types_from: TypesFrom
    with rt.claims.hold(f"upload/{org}/{table}", lease=UPLOAD_LEASE_SECONDS):
        exists = wh.table_exists(org, table)
        if declared is not None and fitted is not None:
            drift = _declared_drift(wh, org, declared) if exists else []
            if drift and write_mode == "append":
                raise BadRequest(
                    f"{table} exists with columns other than its declaration ({'; '.join(drift)}), so rows"
                    " of the declared types cannot be appended; upload with ?mode=replace to recreate it"
                    " as declared",
                    code="table_schema_mismatch",
                    differences=drift,
                )
            rows = _write_declared(
                wh, org, declared, fitted.data, write_mode, exists=exists, drift=bool(drift)
            )
            renamed, types_from = fitted.renamed, "declared"
        elif exists and write_mode == "append":
            current = _existing_schema(wh, org, table)
            origin = f"its columns: {', '.join(current.column_names)}"
            fitted = fit_upload(read_records(kind, body), current, table=table, origin=origin)
            rows = wh.load_arrow(org, table, fitted.data, mode="append") if fitted.data.num_rows else 0
            renamed, types_from = fitted.renamed, "table"
        else:
            data, renamed = _inferred(content_type, body)
            rows = wh.load_arrow(org, table, data, mode=write_mode)
            types_from = "inferred"
    return {
        "table": table,
        "rows_loaded": rows,
        "mode": write_mode,
        "renamed_columns": renamed,
        "types_from": types_from,
    }


def _write_raw(wh: Warehouse, org: str, table: str, data: pa.Table, mode: WriteMode) -> int:
    """Write a raw upload (all STRING); an append takes the table's columns, absent ones as NULL."""
    if mode == "append" and wh.table_exists(org, table):
        columns = wh.table_columns(org, table)
        extra = [c for c in data.column_names if c not in columns]
        if extra:
            raise BadRequest(
                f"{table} has no columns {', '.join(extra)}: upload with ?mode=replace to load a file with"
                " other columns",
                code="upload_unknown_columns",
            )
        data = pa.table(
            {c: data[c] if c in data.column_names else pa.nulls(data.num_rows, pa.string()) for c in columns}
        )
    return wh.load_arrow(org, table, data, mode=mode) if data.num_rows or mode == "replace" else 0


def _declared_in(table: str) -> str:
    return f"as configs/schemas/tenant/{table}.json declares it"


def _inferred(content_type: str | None, body: bytes) -> tuple[pa.Table, dict[str, str]]:
    """The upload with the types pyarrow infers, its columns renamed warehouse-safe (and which were)."""
    data = parse_upload(content_type, body)
    if data.num_columns == 0:
        raise BadRequest("the upload has no columns", code="empty_upload")
    names = rename_columns([name.strip() for name in data.column_names], "keep", "the upload")
    renamed = {
        original: new for original, new in zip(data.column_names, names, strict=True) if original != new
    }
    return data.rename_columns(names), renamed


def _existing_schema(wh: Warehouse, org: str, table: str) -> TableSchema:
    try:
        schema = wh.table_schema(org, table)
        for field in schema.fields:
            field.signature()  # a type uploads cannot fill (GEOGRAPHY, a MAP, ...) is refused here
        return schema
    except ConfigurationError as exc:
        raise BadRequest(
            f"{table} cannot be appended to by an upload: {exc.message}; upload with ?mode=replace instead",
            code="unsupported_table",
        ) from None


def _declared_drift(wh: Warehouse, org: str, declared: TableSchema) -> list[str]:
    """How the existing table differs from its declaration (e.g. left by an upload before it was declared)."""
    try:
        return schema_differences(wh.table_schema(org, declared.name), declared)
    except ConfigurationError as exc:
        return [exc.message]


def _write_declared(
    wh: Warehouse,
    org: str,
    schema: TableSchema,
    data: pa.Table,
    mode: WriteMode,
    *,
    exists: bool,
    drift: bool,
) -> int:
    """Write fitted rows into a declared table, creating it from its declaration when absent.

    Replace loads a staging table of the declaration first, then swaps the rows in with one transaction, so
    the table keeps its definition (and its rows, should anything fail). A table that has drifted from its
    declaration is recreated as declared instead.
    """
    if mode == "append":
        if not exists:
            wh.create_table(org, schema)
        return wh.load_arrow(org, schema.name, data, mode="append") if data.num_rows else 0
    staging = schema.model_copy(update={"name": f"{INTERNAL_PREFIX}upload_{uuid.uuid4().hex[:12]}"})
    wh.create_table(org, staging)
    target, source = table_ref(org, schema.name), table_ref(org, staging.name)
    columns = ", ".join(quote_identifier(name) for name in schema.column_names)
    insert = f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {source}"
    try:
        if data.num_rows:
            wh.load_arrow(org, staging.name, data, mode="append")
        if exists and not drift:
            wh.run_atomically([(f"DELETE FROM {target} WHERE TRUE", None), (insert, None)])
        else:
            wh.create_table(org, schema, recreate=True)
            wh.execute(insert)
    finally:
        wh.execute(f"DROP TABLE IF EXISTS {source}")
    return data.num_rows


def list_tables(rt: Runtime, org: str) -> dict[str, Any]:
    wh = rt.warehouse
    return {"tables": [{"name": t, "rows": wh.count_rows(org, t)} for t in wh.list_tables(org)]}


def _page_bound(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"\d{1,9}", raw) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", code="invalid_query")
    return int(raw)


def read_table(rt: Runtime, org: str, table: str, limit: str | None, offset: str | None) -> dict[str, Any]:
    """A page of a tenant table's rows, and the offset of the next page (null at the end)."""
    validate_table_name(table)
    size = _page_bound(limit, "limit", 100, 1, MAX_PAGE)
    start = _page_bound(offset, "offset", 0, 0, 10**9)
    if not rt.warehouse.table_exists(org, table):
        raise NotFound(f"no table {table}", code="table_not_found")
    rows = rt.warehouse.read_rows(org, table, limit=size + 1, offset=start)
    more = len(rows) > size
    return {"table": table, "rows": rows[:size], "next_offset": start + size if more else None}
