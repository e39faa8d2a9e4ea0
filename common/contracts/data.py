"""Tenant data (CONTRACT §2): uploads, the table listing and pages of rows."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from common.contracts.base import QueryParameters, ResponseBody
from common.contracts.query import DecimalDigits

UploadMode = Literal["append", "replace"]
UploadTypes = Literal["template", "declared", "table", "inferred"]
UPLOAD_CONTENT_TYPES = {  # Content-Type → how OpenAPI describes the raw body
    "text/csv": "string",
    "application/x-ndjson": "string",
    "application/vnd.apache.parquet": "binary",
}
MAX_ROWS_PAGE = 1000
MAX_OFFSET = 10**9


class UploadQuery(QueryParameters):
    """Query parameters of POST /api/v1/data/{org}/uploads/{table}."""

    error_code: ClassVar[str] = "invalid_mode"
    messages: ClassVar[dict[str, str]] = {"mode": "mode must be append or replace"}

    mode: UploadMode = Field("append", description="append to the table, or replace it whole.")


class Uploaded(ResponseBody):
    table: str
    rows_loaded: int
    mode: UploadMode
    renamed_columns: dict[str, str] = Field(description="Uploaded column name → warehouse-safe name it got.")
    types_from: UploadTypes = Field(
        description=(
            "Where the columns' types came from: `template` (the raw table a template's source.files step"
            " loads: read as that step reads files, every column STRING), `declared` (configs/schemas/tenant/ declares the table;"
            " the upload was converted to that definition), `table` (appended to an undeclared table:"
            " converted to its types) or `inferred` (a new or replaced undeclared table: from the data)."
        )
    )


class TableEntry(ResponseBody):
    name: str
    rows: int


class TableList(ResponseBody):
    tables: list[TableEntry]


class TablePageQuery(QueryParameters):
    """Query parameters of GET /api/v1/data/{org}/tables/{table}."""

    messages: ClassVar[dict[str, str]] = {
        "limit": f"limit must be an integer from 1 to {MAX_ROWS_PAGE}",
        "offset": f"offset must be an integer from 0 to {MAX_OFFSET}",
    }

    limit: Annotated[int, Field(ge=1, le=MAX_ROWS_PAGE), DecimalDigits] = Field(
        100, description="Rows per page."
    )
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET), DecimalDigits] = Field(0, description="Rows to skip.")


class TablePage(ResponseBody):
    table: str
    rows: list[dict[str, Any]]
    next_offset: int | None = Field(description="Offset of the next page; null on the last page.")
