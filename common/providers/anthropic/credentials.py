"""Anthropic's credential: an organization Admin API key. It takes no settings."""

from __future__ import annotations

from common.providers.base import ApiKey


class AnthropicAdminKey(ApiKey):
    rule = (
        r"sk-ant-admin[A-Za-z0-9_-]{20,}",
        "an admin key: sk-ant-admin followed by at least 20 of A-Za-z0-9_-",
    )
