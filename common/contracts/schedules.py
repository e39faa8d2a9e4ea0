"""Tenant schedules: the schedule body and the schedule as the API shows it."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from common.contracts.base import RequestBody, ResponseBody
from common.types import TEMPLATE_PATH_PATTERN, TemplatePath

SCHEDULE_TEMPLATE_PATTERN = TEMPLATE_PATH_PATTERN


class ScheduleRequest(RequestBody):
    """A tenant schedule: run `template` with `parameters` at every slot of `cron`, read in `time_zone`."""

    template: TemplatePath = Field(
        description="provider/domain/template, e.g. gcp/cost/cost_billing."
    )
    cron: str = Field(
        max_length=100,
        description="Unix-cron, five fields (minute hour day-of-month month day-of-week), e.g. `0 6 * * *`;"
        " at most every 15 minutes (the dispatcher's cadence). A slot starts at the first dispatcher tick at"
        " or after it.",
    )
    time_zone: str = Field(
        "Etc/UTC", max_length=64, description="IANA time zone the cron is read in, e.g. Europe/Berlin."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Run parameters: `date` (YYYY-MM-DD, `yesterday` or `today`, resolved when each run"
        " starts) and the template's overridable variables.",
    )
    enabled: bool = Field(True, description="A disabled schedule is kept but never starts.")
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,99}$",
        description="Unique among the tenant's schedules.",
    )


class ScheduleView(ResponseBody):
    schedule_id: str
    org_slug: str
    name: str | None
    template: str
    cron: str
    time_zone: str
    parameters: dict[str, Any]
    enabled: bool
    next_run_at: dt.datetime | None = Field(description="Next slot, UTC ISO 8601; null when disabled.")
    created_at: dt.datetime


class ScheduleList(ResponseBody):
    schedules: list[ScheduleView] = Field(description="Oldest first.")


class ScheduleDeleted(ResponseBody):
    schedule_id: str
    deleted: Literal[True]
