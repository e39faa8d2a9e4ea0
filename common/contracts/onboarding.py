"""Bootstrap, dry-run, onboarding and API-key rotation (CONTRACT §2): bodies and answers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.contracts.base import RequestBody, ResponseBody
from common.types import Email, TenantId

Plan = Literal["starter", "professional", "enterprise"]
CheckStatus = Literal["passed", "failed", "warning"]
WelcomeEmail = Literal["sent", "outbox", "failed", "skipped"]
WELCOME_EMAIL_DESCRIPTION = (
    "The welcome mail to admin_email: sent (the SMTP server took it), outbox (no SMTP server: written to the"
    " outbox), failed (logged; onboarding is done all the same) or skipped (a placeholder address)."
)


class BootstrapRequest(RequestBody):
    force_recreate_dataset: bool = Field(
        False, description="Drop and recreate the control dataset (destroys all orgs)."
    )


class DryrunRequest(RequestBody):
    org_slug: TenantId = Field(description="Tenant id; also the dataset name.")
    company_name: str = Field(min_length=1, max_length=200)
    admin_email: Email
    subscription_plan: Plan = "starter"


class OnboardRequest(DryrunRequest):
    force_recreate_dataset: bool = False
    force_recreate_tables: bool = False


class CustomerOnboardRequest(RequestBody):
    tenant_id: TenantId
    admin_email: Email | None = None
    company_name: str | None = Field(None, min_length=1, max_length=200)
    subscription_plan: Plan = "starter"


class Bootstrapped(ResponseBody):
    """The control dataset and tables exist; what this call created."""

    status: str
    dataset: str
    dataset_created: bool
    tables_created: list[str] = Field(description="Tables this call created; empty when all existed.")


class DryrunCheck(ResponseBody):
    name: str
    status: CheckStatus
    message: str


class DryrunReport(ResponseBody):
    """What onboarding would find; nothing was changed."""

    org_slug: str
    ready: bool = Field(description="No check failed.")
    checks: list[DryrunCheck]


class Onboarded(ResponseBody):
    """The organisation exists with its dataset, tables and API key (shown only in this answer)."""

    org_slug: str
    api_key: str = Field(description="{org_slug}_api_ followed by at least 32 letters and digits.")
    dataset_created: bool
    tables_created: list[str]
    dryrun_status: str = Field(description="Status of the dry-run pipeline, e.g. COMPLETE, or FAILED: why.")
    dryrun_pipeline_logging_id: str | None
    welcome_email: WelcomeEmail = Field(description=WELCOME_EMAIL_DESCRIPTION)
    message: str


class CustomerOnboarded(ResponseBody):
    """Onboarded, under the older name of the operation (tenant_id for org_slug)."""

    tenant_id: str
    api_key: str
    dataset_created: bool
    tables_created: list[str]
    dryrun_status: str
    dryrun_pipeline_logging_id: str | None
    welcome_email: WelcomeEmail = Field(description=WELCOME_EMAIL_DESCRIPTION)
    message: str


class KeyRotated(ResponseBody):
    """The organisation's new API key; the previous one no longer works."""

    org_slug: str
    api_key: str
    message: str
