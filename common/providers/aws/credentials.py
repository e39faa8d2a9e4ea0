"""AWS's credential (an IAM access key pair, or a role ARN to assume) and settings (the CUR location)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, RootModel, SecretStr, field_validator

from common.providers.base import CredentialModel, DataLocation, SettingsModel, secret_matching

ROLE_ARN = r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}"


class AwsAccessKey(CredentialModel):
    """An IAM access key pair; temporary (ASIA) keys may carry their session token."""

    aws_access_key_id: str = Field(
        pattern=r"^(AKIA|ASIA)[A-Z0-9]{16}$", description="AKIA or ASIA followed by 16 of A-Z0-9"
    )
    aws_secret_access_key: Annotated[
        SecretStr, AfterValidator(secret_matching(r"[A-Za-z0-9/+=]{40}", "40 characters of A-Za-z0-9/+="))
    ] = Field(description="40 characters of A-Za-z0-9/+=")
    aws_session_token: (
        Annotated[SecretStr, AfterValidator(secret_matching(r"\S+", "a token without spaces"))] | None
    ) = Field(None, description="a session token (temporary keys only)")


class AwsRoleArn(RootModel[SecretStr]):
    """An IAM role the platform assumes: arn:aws:iam::<12-digit account>:role/<path/name>."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    @field_validator("root")
    @classmethod
    def _role_arn(cls, value: SecretStr) -> SecretStr:
        rule = "an access key object or a role ARN arn:aws:iam::<12 digits>:role/<name>"
        return secret_matching(ROLE_ARN, rule)(value)

    @property
    def account_id(self) -> str:
        return self.root.get_secret_value().split(":")[4]


class AwsSettings(SettingsModel):
    cur_location: DataLocation = Field(description="where the Cost and Usage Report files are")
    cur_version: Literal["auto", "legacy", "2.0"] = Field(
        "auto", description="the CUR format; auto detects it"
    )
