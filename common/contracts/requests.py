"""Request bodies of the HTTP API (CONTRACT §2), validated by pydantic; also the OpenAPI schemas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.types import EMAIL_PATTERN, TENANT_ID_PATTERN

Plan = Literal["starter", "professional", "enterprise"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class BootstrapRequest(Strict):
    force_recreate_dataset: bool = Field(False, description="Drop and recreate the control dataset (destroys all orgs).")


class DryrunRequest(Strict):
    org_slug: str = Field(pattern=TENANT_ID_PATTERN, description="Tenant id; also the dataset name.")
    company_name: str = Field(min_length=1, max_length=200)
    admin_email: str = Field(pattern=EMAIL_PATTERN, max_length=320)
    subscription_plan: Plan = "starter"


class OnboardRequest(DryrunRequest):
    force_recreate_dataset: bool = False
    force_recreate_tables: bool = False


class CustomerOnboardRequest(Strict):
    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    admin_email: str | None = Field(None, pattern=EMAIL_PATTERN, max_length=320)
    company_name: str | None = Field(None, min_length=1, max_length=200)
    subscription_plan: Plan = "starter"


class IntegrationSetupRequest(Strict):
    """A provider credential and its settings; the format of both is checked per provider before storing."""

    credential: str | dict[str, Any] = Field(
        description="The secret, encrypted at rest and never echoed. gcp: a service account key file (object, or "
        "a string holding its JSON); aws: {aws_access_key_id, aws_secret_access_key[, aws_session_token]} or a "
        "role ARN arn:aws:iam::<account>:role/<name>; azure: {tenant_id, client_id, client_secret}; openai: "
        "an admin key sk-admin-...; anthropic: an admin key sk-ant-admin...; deepseek: a key sk-...",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Non-secret settings, listed with the integration. gcp: billing_export_table "
        "(project.dataset.table); aws: cur_location (gs://bucket/path or an absolute path), cur_version "
        "(auto|legacy|2.0); azure: export_location (gs://bucket/path or an absolute path); openai: "
        "organization_id (org-...), optional; anthropic, deepseek: none.",
    )

    @field_validator("credential")
    @classmethod
    def _not_empty(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if not value:
            raise ValueError("credential must not be empty")
        return value


class RunRequest(BaseModel):
    """date, trigger_by and the template's declared overridable variables."""

    model_config = ConfigDict(extra="allow")

    date: str | None = Field(None, description="UTC day YYYY-MM-DD; default yesterday.")
    trigger_by: str | None = Field(None, description="Who or what asked for the run.")


SCHEDULE_TEMPLATE_PATTERN = r"^[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_]{0,49}$"


class ScheduleRequest(Strict):
    """A tenant schedule: run `template` with `parameters` at every slot of `cron`, read in `time_zone`."""

    template: str = Field(
        pattern=SCHEDULE_TEMPLATE_PATTERN, description="provider/domain/template, e.g. gcp/cost/cost_billing."
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


class ScheduleView(BaseModel):
    schedule_id: str
    org_slug: str
    name: str | None
    template: str
    cron: str
    time_zone: str
    parameters: dict[str, Any]
    enabled: bool
    next_run_at: str | None = Field(description="Next slot, UTC ISO 8601; null when disabled.")
    created_at: str


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]


class ScheduleDeleted(BaseModel):
    schedule_id: str
    deleted: Literal[True]
