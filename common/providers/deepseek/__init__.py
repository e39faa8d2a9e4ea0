"""DeepSeek: an API key, stored and checked; no step reads DeepSeek costs yet."""

from common.providers.base import CredentialSpec, ProviderSpec
from common.providers.deepseek.credentials import DeepSeekKey
from common.providers.deepseek.verify import verify_api_key

PROVIDER = ProviderSpec(
    name="deepseek",
    credential=CredentialSpec(expected="an API key string (sk-...)", string_model=DeepSeekKey),
    verify=verify_api_key,
)
