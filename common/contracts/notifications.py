"""An organisation's notification settings (GET and PUT /api/v1/organizations/{org}/notifications)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from common.contracts.base import RequestBody, ResponseBody
from common.types import Email

MAX_NOTIFICATION_EMAILS = 20


class NotificationSettingsRequest(RequestBody):
    """Who the platform mails for the organisation. Fields left out keep their current value."""

    emails: list[Email] = Field(
        max_length=MAX_NOTIFICATION_EMAILS,
        description=f"Recipients besides admin_email, at most {MAX_NOTIFICATION_EMAILS}; [] for none. Each"
        " address counts once, whatever its case.",
    )
    include_admin_email: bool | None = Field(
        None, description="Whether the admin_email given at onboarding is a recipient too (initially true)."
    )
    on_failure: bool | None = Field(
        None,
        description="Whether a failed run is mailed (initially true): a failed scheduled or bulk run, and a"
        " template's failure notification that names no recipient.",
    )

    @field_validator("emails")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        kept = []
        for address in value:
            if address.casefold() not in seen:
                seen.add(address.casefold())
                kept.append(address)
        return kept


class NotificationSettingsView(ResponseBody):
    """The organisation's notification settings and the recipients they give."""

    org_slug: str
    admin_email: str | None = Field(description="The address given at onboarding.")
    include_admin_email: bool
    emails: list[str] = Field(description="Recipients besides admin_email.")
    on_failure: bool
    recipients: list[str] = Field(
        description="Who the organisation's mail goes to: admin_email (when included), then emails."
        " Addresses under .invalid (placeholders) are never mailed."
    )
    updated_at: dt.datetime | None = Field(
        description="When the settings were last set; null: never (defaults)."
    )
