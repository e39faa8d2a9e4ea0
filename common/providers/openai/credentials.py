"""OpenAI's credential (an organization admin key) and settings (the organization id, optional)."""

from __future__ import annotations

from pydantic import Field

from common.providers.base import ApiKey, SettingsModel


class OpenAiAdminKey(ApiKey):
    rule = (r"sk-admin-[A-Za-z0-9_-]{20,}", "an admin key: sk-admin- followed by at least 20 of A-Za-z0-9_-")


class OpenAiSettings(SettingsModel):
    organization_id: str | None = Field(
        None, pattern=r"^org-[A-Za-z0-9_-]{1,64}$", description="org- and its id"
    )
