"""Anthropic: an admin key, the cost report API (`costs_api`), and the anthropic.costs step (`processors`)."""

from common.providers.anthropic import processors  # noqa: F401  (registers its steps)
from common.providers.anthropic.credentials import AnthropicAdminKey
from common.providers.anthropic.verify import verify_admin_key
from common.providers.base import CredentialSpec, ProviderSpec

PROVIDER = ProviderSpec(
    name="anthropic",
    credential=CredentialSpec(
        expected="an admin key string (sk-ant-admin...)", string_model=AnthropicAdminKey
    ),
    verify=verify_admin_key,
)
