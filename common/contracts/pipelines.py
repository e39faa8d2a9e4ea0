"""Pipeline runs and templates (CONTRACT §2): the run body, the run listing's query, the run object."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.contracts.base import QueryParameters, ResponseBody
from common.contracts.query import DecimalDigits

RunStatus = Literal["PENDING", "RUNNING", "COMPLETE", "FAILED"]
StepStatus = Literal["PENDING", "RUNNING", "COMPLETE", "FAILED", "SKIPPED"]
TriggerType = Literal["api", "schedule", "bulk"]
MAX_RUNS_PAGE = 1000


class RunRequest(BaseModel):
    """date, trigger_by and the template's declared overridable variables.

    The template decides which further variables exist and what they may be, so the run service checks this
    body (400 naming what it refuses); the model describes its shape.
    """

    model_config = ConfigDict(extra="allow")

    date: str | None = Field(None, description="UTC day YYYY-MM-DD; default yesterday.")
    trigger_by: str | None = Field(None, description="Who or what asked for the run.")


class RunListQuery(QueryParameters):
    """Query parameters of GET /api/v1/pipelines/runs."""

    messages: ClassVar[dict[str, str]] = {
        "status": "status must be one of: PENDING, RUNNING, COMPLETE, FAILED",
        "limit": f"limit must be an integer from 1 to {MAX_RUNS_PAGE}",
    }

    status: RunStatus | None = Field(None, description="Only runs whose latest status is this one.")
    limit: Annotated[int, Field(ge=1, le=MAX_RUNS_PAGE), DecimalDigits] = Field(
        50, description="Most runs to list."
    )


class RunAccepted(ResponseBody):
    """A run was created PENDING (or an Idempotency-Key replay answers the run it started)."""

    pipeline_logging_id: str
    pipeline_id: str = Field(description="{tenant}-{provider}-{domain}-{template}.")
    status: RunStatus = Field(description="PENDING; a replay gives the run's current status.")
    message: str
    parameters: dict[str, Any] = Field(description="The resolved parameters the run uses.")
    replayed: bool = Field(description="True when an Idempotency-Key replay answered an earlier run.")


class RunStep(ResponseBody):
    step_index: int
    step_id: str
    name: str
    ps_type: str
    status: StepStatus
    start_time: dt.datetime | None
    end_time: dt.datetime | None
    duration_ms: int | None
    rows_processed: int | None
    bytes_processed: int | None = Field(
        description="Bytes the warehouse reported processing for the step (BigQuery); null where it reports none"
    )
    error_message: str | None


class Run(ResponseBody):
    """The run object of CONTRACT §2 with its steps."""

    pipeline_logging_id: str
    pipeline_id: str
    tenant_id: str
    provider: str
    domain: str
    template: str
    status: RunStatus
    trigger_type: TriggerType
    trigger_by: str
    start_time: dt.datetime
    end_time: dt.datetime | None
    duration_ms: int | None
    parameters: dict[str, Any]
    error_message: str | None
    steps: list[RunStep]


class RunList(ResponseBody):
    runs: list[Run] = Field(description="Newest first; this tenant's only.")


class TemplateEntry(ResponseBody):
    """A runnable template and what a run request may set."""

    provider: str
    domain: str
    template: str
    name: str | None = Field(None, description="Display name (a described-shape template's pipeline_name).")
    description: str
    variables: dict[str, dict[str, Any]] = Field(
        description="Variable name → its type, default, pattern, values and whether a request may override it."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What loading accepted but does not do as written, e.g. a described-shape destination's"
        " dataset_type (a step writes only into its tenant's own dataset).",
    )


class TemplateCatalogue(ResponseBody):
    templates: list[TemplateEntry]
