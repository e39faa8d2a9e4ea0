"""Tenant data: upload CSV/NDJSON/Parquet into the tenant's dataset, list tables, page through rows."""

from __future__ import annotations

import io
import re
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from common.errors import BadRequest, NotFound, UnsupportedMediaType
from common.runtime import Runtime
from common.sources.columns import rename_columns
from common.tenancy import METADATA_TABLES, validate_table_name
from common.warehouse.base import WriteMode

CONTENT_TYPES = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/vnd.apache.parquet": "parquet",
}
MAX_PAGE = 1000


def parse_upload(content_type: str | None, body: bytes) -> pa.Table:
    """Parse an upload body by its Content-Type."""
    kind = CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if kind is None:
        raise UnsupportedMediaType(f"Content-Type must be one of: {', '.join(CONTENT_TYPES)}")
    if not body:
        raise BadRequest("the upload is empty", code="empty_upload")
    try:
        if kind == "csv":
            return pa_csv.read_csv(io.BytesIO(body))
        if kind == "ndjson":
            return pa_json.read_json(io.BytesIO(body))
        return pq.read_table(io.BytesIO(body))
    except (pa.ArrowException, OSError, ValueError) as exc:
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise BadRequest(f"the body is not valid {kind}: {message}", code="invalid_upload") from None


def upload(rt: Runtime, org: str, table: str, content_type: str | None, body: bytes, mode: str | None) -> dict:
    """Load an upload into the tenant's table (append by default, or replace it whole)."""
    validate_table_name(table)
    if table in METADATA_TABLES:
        raise BadRequest(f"{table} is maintained by the platform and cannot be uploaded into", code="reserved_table")
    write_mode: WriteMode
    if mode in (None, "", "append"):
        write_mode = "append"
    elif mode == "replace":
        write_mode = "replace"
    else:
        raise BadRequest("mode must be append or replace", code="invalid_mode")
    data = parse_upload(content_type, body)
    if data.num_columns == 0:
        raise BadRequest("the upload has no columns", code="empty_upload")
    originals = [name.strip() for name in data.column_names]
    names = rename_columns(originals, "keep", "the upload")
    renamed = {original: new for original, new in zip(data.column_names, names, strict=True) if original != new}
    data = data.rename_columns(names)
    rows = rt.warehouse.load_arrow(org, table, data, mode=write_mode)
    return {"table": table, "rows_loaded": rows, "mode": write_mode, "renamed_columns": renamed}


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
