"""AWS: an access key or a role ARN, and where the Cost and Usage Report files are (read by source.files)."""

from common.providers.aws import processors  # noqa: F401  (registers its steps)
from common.providers.aws.credentials import AwsAccessKey, AwsRoleArn, AwsSettings
from common.providers.aws.verify import verify_cur_location
from common.providers.base import CredentialSpec, ProviderSpec

PROVIDER = ProviderSpec(
    name="aws",
    credential=CredentialSpec(
        expected="an access key object {aws_access_key_id, aws_secret_access_key} or a role ARN string",
        object_model=AwsAccessKey,
        string_model=AwsRoleArn,
    ),
    settings=AwsSettings,
    verify=verify_cur_location,
)
