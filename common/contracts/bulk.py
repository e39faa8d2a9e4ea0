"""Bulk runs (CONTRACT §2, /api/v1/admin/runs/bulk): one template started for many tenants by an operator."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import Field

from common.contracts.base import RequestBody, ResponseBody
from common.types import TemplatePath, TenantId

MAX_BULK_TENANTS = 10_000  # ids in one request; "*" reaches every active tenant, however many
MAX_LISTED = 100  # failures and skipped tenants a status answer lists (all of them are counted)
TRIGGER_BY_PATTERN = r"^[\w.@+\- :/]{1,200}$"


class BulkRunRequest(RequestBody):
    """Start `template` with `parameters` for every active tenant ("*") or for the tenants listed."""

    template: TemplatePath = Field(description="provider/domain/template, e.g. gcp/cost/cost_billing.")
    tenants: Literal["*"] | Annotated[list[TenantId], Field(max_length=MAX_BULK_TENANTS)] = Field(
        description='"*" for every active tenant, or a list of tenant ids (each must be an active tenant).',
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Run parameters: `date` (YYYY-MM-DD, `yesterday` or `today`, pinned to one UTC day when"
        " the bulk is accepted, so every tenant's run covers the same day) and the template's overridable"
        " variables. Checked against the template before anything starts (400 naming the bad one).",
    )
    trigger_by: str | None = Field(
        None, pattern=TRIGGER_BY_PATTERN, description="Who asked for it; default `bulk:<bulk_id>`."
    )


class BulkAccepted(ResponseBody):
    """The bulk run is recorded and its schedules messages are published; its runs start asynchronously."""

    bulk_id: str = Field(description="Every run it starts carries it; GET /api/v1/admin/runs/bulk/{bulk_id}.")
    template: str
    tenants: int = Field(description="Tenants it was published for (those that cannot run it are skipped).")
    chunks: int = Field(description="Schedules messages published for it (FANOUT_CHUNK_SIZE tenants each).")
    parameters: dict[str, Any] = Field(description="The parameters every run is started with.")
    replayed: bool = Field(description="True when an Idempotency-Key replay answered an earlier bulk run.")


class BulkCounts(ResponseBody):
    """Tenants of the bulk run by the status of their run; every tenant is in exactly one count."""

    PENDING: int = Field(description="Run not started yet (chunk not processed) or started and waiting.")
    RUNNING: int
    COMPLETE: int
    FAILED: int = Field(description="Run failed, or the tenant's run could not start (quota, not active).")
    SKIPPED: int = Field(
        description="Not given a run: the tenant cannot run the template (no integration of its provider and"
        " no source data), or an identical run was already in flight."
    )


class BulkFailure(ResponseBody):
    tenant_id: str
    pipeline_logging_id: str | None = Field(description="The failed run; null when none could start.")
    error_message: str | None


class BulkSkip(ResponseBody):
    tenant_id: str
    reason: str | None


class BulkStatus(ResponseBody):
    """Where a bulk run stands."""

    bulk_id: str
    template: str
    parameters: dict[str, Any]
    trigger_by: str
    created_at: dt.datetime
    tenants: int
    chunks: int
    counts: BulkCounts
    done: bool = Field(description="Every tenant is COMPLETE, FAILED or SKIPPED.")
    failures: list[BulkFailure] = Field(description=f"The first {MAX_LISTED} FAILED tenants, by tenant id.")
    skipped: list[BulkSkip] = Field(description=f"The first {MAX_LISTED} SKIPPED tenants, by tenant id.")
