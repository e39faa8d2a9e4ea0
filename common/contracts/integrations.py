"""Provider integrations (CONTRACT §2): the setup body and the answers, which never carry a secret.

`status` is what the provider's read-only check said: ACTIVE (the call proved the credential; `validated`),
UNVERIFIED (a format check only: the provider could not be reached, or cannot be asked; `message` says why)
or INVALID (the provider refused it, or what it names does not exist). Setup stores the credential in all
three cases; POST .../validate checks the stored one again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, field_validator

from common.contracts.base import RequestBody, ResponseBody

IntegrationStatus = Literal["ACTIVE", "UNVERIFIED", "INVALID"]


class IntegrationSetupRequest(RequestBody):
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


STATUS = (
    "ACTIVE: a read-only call to the provider proved it; UNVERIFIED: checked for its format only (the "
    "provider could not be reached or asked); INVALID: the provider refused it."
)
VALIDATED = "True only after a read-only call to the provider proved the credential (status ACTIVE)."
MESSAGE = "What the check found, in a sentence: why it is UNVERIFIED or INVALID. Never holds the secret."


class IntegrationStored(ResponseBody):
    """The credential is stored, encrypted, whatever the check found; only its settings are echoed."""

    org_slug: str
    provider: str
    status: IntegrationStatus = Field(description=STATUS)
    validated: bool = Field(description=VALIDATED)
    message: str = Field(description=MESSAGE)
    checked_at: dt.datetime = Field(description="When the provider was asked.")
    settings: dict[str, Any]


class IntegrationEntry(ResponseBody):
    """One integration of the tenant, without its secret."""

    provider: str
    status: IntegrationStatus = Field(description=STATUS)
    validated: bool = Field(description=VALIDATED)
    message: str | None = Field(description=MESSAGE)
    checked_at: dt.datetime | None = Field(
        description="When the credential was last checked with its provider; null when it never was (stored "
        "before checks existed: UNVERIFIED)."
    )
    created_at: dt.datetime
    updated_at: dt.datetime
    settings: dict[str, Any]


class IntegrationList(ResponseBody):
    integrations: list[IntegrationEntry] = Field(description="Sorted by provider.")


class IntegrationChecked(ResponseBody):
    """What one read-only call to the provider, made with the stored credential, found; it is recorded."""

    provider: str
    status: IntegrationStatus = Field(description=STATUS)
    validated: bool = Field(description=VALIDATED)
    message: str = Field(description=MESSAGE)
    checked_at: dt.datetime = Field(description="When the provider was asked.")


class IntegrationDeleted(ResponseBody):
    """The integration is gone: its row, credential included, is deleted from the control dataset."""

    provider: str
    deleted: Literal[True]
