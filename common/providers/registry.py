"""The provider registry: every provider the platform knows, in the order they are listed to tenants.

Services and steps look providers up here, never by importing a provider by name. Adding a provider adds
one line to `PROVIDERS`.
"""

from __future__ import annotations

from common.providers import anthropic, aws, azure, deepseek, focus, gcp, openai
from common.providers.base import ProviderSpec

PROVIDERS: tuple[ProviderSpec, ...] = (
    gcp.PROVIDER,
    aws.PROVIDER,
    azure.PROVIDER,
    openai.PROVIDER,
    anthropic.PROVIDER,
    deepseek.PROVIDER,
    focus.PROVIDER,
)
_BY_NAME = {spec.name: spec for spec in PROVIDERS}


def find_provider(name: str) -> ProviderSpec | None:
    """The provider called `name`, or None."""
    return _BY_NAME.get(name)


def integration_providers() -> tuple[str, ...]:
    """Names of the providers a tenant can store an integration (a credential) for, in listing order."""
    return tuple(spec.name for spec in PROVIDERS if spec.has_integration)


def integration_provider(name: str) -> ProviderSpec:
    """The provider called `name` that keeps an integration; KeyError otherwise (callers check first)."""
    spec = _BY_NAME[name]
    if not spec.has_integration:
        raise KeyError(name)
    return spec
