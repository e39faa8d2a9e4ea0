"""Provider integrations (CONTRACT §2): the setup body and the answers, which never carry a secret."""

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


class IntegrationStored(ResponseBody):
    """The credential is stored, encrypted; only its (non-secret) settings are echoed."""

    org_slug: str
    provider: str
    status: IntegrationStatus
    validated: bool = Field(description="True only after a read-only call proved the credential.")
    settings: dict[str, Any]


class IntegrationEntry(ResponseBody):
    """One integration of the tenant, without its secret."""

    provider: str
    status: IntegrationStatus
    validated: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    settings: dict[str, Any]


class IntegrationList(ResponseBody):
    integrations: list[IntegrationEntry] = Field(description="Sorted by provider.")
