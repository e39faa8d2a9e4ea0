"""DeepSeek's credential: an API key. It takes no settings, and no step reads DeepSeek costs yet."""

from __future__ import annotations

from common.providers.base import ApiKey


class DeepSeekKey(ApiKey):
    rule = (r"sk-[A-Za-z0-9]{20,}", "an API key: sk- followed by at least 20 of A-Za-z0-9")
