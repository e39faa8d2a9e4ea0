"""Google Cloud: a service account key, the billing export table, and the gcp.billing_export step.

`billing_export` reads one day of the tenant's billing export; `processors` registers the step copying it.
"""

from common.providers.base import CredentialSpec, ProviderSpec
from common.providers.gcp import processors  # noqa: F401  (registers its steps)
from common.providers.gcp.credentials import GcpServiceAccount, GcpSettings
from common.providers.gcp.verify import verify_billing_export

PROVIDER = ProviderSpec(
    name="gcp",
    credential=CredentialSpec(
        expected="a service account key file (a JSON object, or a string holding it)",
        object_model=GcpServiceAccount,
    ),
    settings=GcpSettings,
    verify=verify_billing_export,
)
