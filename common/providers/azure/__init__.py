"""Azure: a service principal, and where the Cost Management export files are (read by source.files)."""

from common.providers.azure import processors  # noqa: F401  (registers its steps)
from common.providers.azure.credentials import AzureServicePrincipal, AzureSettings
from common.providers.azure.verify import verify_export_location
from common.providers.base import CredentialSpec, ProviderSpec

PROVIDER = ProviderSpec(
    name="azure",
    credential=CredentialSpec(
        expected="a service principal object {tenant_id, client_id, client_secret}",
        object_model=AzureServicePrincipal,
    ),
    settings=AzureSettings,
    verify=verify_export_location,
)
