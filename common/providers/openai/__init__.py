"""OpenAI: an admin key, the organization costs API (`costs_api`) and the openai.costs step (`processors`)."""

from common.providers.base import CredentialSpec, ProviderSpec
from common.providers.openai import processors  # noqa: F401  (registers its steps)
from common.providers.openai.credentials import OpenAiAdminKey, OpenAiSettings
from common.providers.openai.verify import verify_admin_key

PROVIDER = ProviderSpec(
    name="openai",
    credential=CredentialSpec(expected="an admin key string (sk-admin-...)", string_model=OpenAiAdminKey),
    settings=OpenAiSettings,
    verify=verify_admin_key,
)
