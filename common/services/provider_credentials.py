"""The format of each provider's credential and settings, checked before a credential is stored.

Only the shape is checked (no call leaves the platform): a service account key must parse and hold a private
key `cryptography` can load, an access key must look like one, a location must be a bucket URI or an
absolute path. A tenant who pasted the wrong thing hears so at setup, not hours later in a failed step.

Refusals are built from where the problem is and what kind it is, never from the input: a message names
the field and the rule, and no part of the credential ever reaches a response or a log.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SecretStr,
    ValidationError,
    field_validator,
)

from common.contracts.requests import EMAIL_PATTERN
from common.errors import ValidationFailed

PROVIDERS = ("gcp", "aws", "azure", "openai", "anthropic", "deepseek")

# BigQuery project ids: 6-30 of a-z0-9-, a letter first, no hyphen last; legacy ones may be `domain:project`.
GCP_PROJECT = r"(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
BILLING_EXPORT_TABLE = (
    rf"^(?P<project>{GCP_PROJECT})\.(?P<dataset>[A-Za-z0-9_]{{1,1024}})\.(?P<table>[A-Za-z0-9_$-]{{1,1024}})$"
)
GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class InvalidCredential(ValidationFailed):
    """The credential does not have its provider's format (422)."""

    code = "invalid_credential"


class InvalidSettings(ValidationFailed):
    """The settings are not the provider's settings, or a value has the wrong format (422)."""

    code = "invalid_settings"


# -- credentials -------------------------------------------------------------------------------------


class CredentialModel(BaseModel):
    """A provider credential: frozen, secrets as SecretStr so no repr or log shows them."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _matches(pattern: str, rule: str) -> Callable[[SecretStr], SecretStr]:
    """A SecretStr check against `pattern` whose failure names the rule, never the value."""

    def check(value: SecretStr) -> SecretStr:
        if not re.fullmatch(pattern, value.get_secret_value()):
            raise ValueError(f"must be {rule}")
        return value

    return check


def _pem_private_key(value: SecretStr) -> SecretStr:
    try:
        load_pem_private_key(value.get_secret_value().encode(), password=None)
    except TypeError:
        raise ValueError(
            "is an encrypted PEM private key; a service account key file holds an unencrypted one"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("is not a PEM private key") from None
    return value


class GcpServiceAccount(CredentialModel):
    """A service account key file (JSON). Its other fields (private_key_id, token_uri, ...) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)

    type: Literal["service_account"] = Field(description="'service_account'")
    project_id: str = Field(pattern=rf"^{GCP_PROJECT}$", description="a Google Cloud project id")
    client_email: str = Field(pattern=EMAIL_PATTERN, max_length=320, description="an email address")
    private_key: Annotated[SecretStr, AfterValidator(_pem_private_key)] = Field(
        description="a PEM private key"
    )

    def info(self) -> dict[str, Any]:
        """The key file as google-auth's `Credentials.from_service_account_info` takes it (secret revealed)."""
        return {**self.model_dump(), "private_key": self.private_key.get_secret_value()}


class AwsAccessKey(CredentialModel):
    """An IAM access key pair; temporary (ASIA) keys may carry their session token."""

    aws_access_key_id: str = Field(
        pattern=r"^(AKIA|ASIA)[A-Z0-9]{16}$", description="AKIA or ASIA followed by 16 of A-Z0-9"
    )
    aws_secret_access_key: Annotated[
        SecretStr, AfterValidator(_matches(r"[A-Za-z0-9/+=]{40}", "40 characters of A-Za-z0-9/+="))
    ] = Field(description="40 characters of A-Za-z0-9/+=")
    aws_session_token: (
        Annotated[SecretStr, AfterValidator(_matches(r"\S+", "a token without spaces"))] | None
    ) = Field(None, description="a session token (temporary keys only)")


class AwsRoleArn(RootModel[SecretStr]):
    """An IAM role the platform assumes: arn:aws:iam::<12-digit account>:role/<path/name>."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)

    @field_validator("root")
    @classmethod
    def _role_arn(cls, value: SecretStr) -> SecretStr:
        role = r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}"
        return _matches(role, "an access key object or a role ARN arn:aws:iam::<12 digits>:role/<name>")(
            value
        )

    @property
    def account_id(self) -> str:
        return self.root.get_secret_value().split(":")[4]


class AzureServicePrincipal(CredentialModel):
    """A Microsoft Entra service principal (app registration) with a client secret."""

    tenant_id: str = Field(pattern=UUID, description="a UUID (the directory id)")
    client_id: str = Field(pattern=UUID, description="a UUID (the application id)")
    client_secret: Annotated[SecretStr, AfterValidator(_matches(r"\S(?:.*\S)?", "a non-empty secret"))] = (
        Field(description="the client secret")
    )


class ApiKey(RootModel[SecretStr]):
    """An API key string; each provider's subclass says its format."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)
    rule: ClassVar[tuple[str, str]] = (r".+", "a key")  # (pattern, wording)

    @field_validator("root")
    @classmethod
    def _format(cls, value: SecretStr) -> SecretStr:
        pattern, wording = cls.rule
        return _matches(pattern, wording)(value)


class OpenAiAdminKey(ApiKey):
    rule = (r"sk-admin-[A-Za-z0-9_-]{20,}", "an admin key: sk-admin- followed by at least 20 of A-Za-z0-9_-")


class AnthropicAdminKey(ApiKey):
    rule = (
        r"sk-ant-admin[A-Za-z0-9_-]{20,}",
        "an admin key: sk-ant-admin followed by at least 20 of A-Za-z0-9_-",
    )


class DeepSeekKey(ApiKey):
    rule = (r"sk-[A-Za-z0-9]{20,}", "an API key: sk- followed by at least 20 of A-Za-z0-9")


Credential = GcpServiceAccount | AwsAccessKey | AwsRoleArn | AzureServicePrincipal | ApiKey


# -- settings ----------------------------------------------------------------------------------------


def _data_location(value: str) -> str:
    """A gs://bucket[/path] URI, or an absolute local path (file:// URIs become plain paths)."""
    rule = "must be a gs://bucket/path URI or an absolute local path"
    if not value or CONTROL_CHARACTERS.search(value):
        raise ValueError(rule)
    if value.startswith("gs://"):
        bucket, _, _ = value[len("gs://") :].partition("/")
        if not GCS_BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(f"{rule} (the bucket name is not a Cloud Storage bucket name)")
        return value
    if value.startswith("file:"):
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ValueError(f"{rule} (a file: URI names a path on this machine, e.g. file:///data/cur)")
        value = unquote(parts.path)
        if not value or CONTROL_CHARACTERS.search(value):
            raise ValueError(rule)
    if not value.startswith("/"):
        raise ValueError(rule)
    if ".." in value.split("/"):
        raise ValueError(f"{rule} without '..' segments")
    return posixpath.normpath(value) if value != "/" else value


DataLocation = Annotated[str, AfterValidator(_data_location)]


class SettingsModel(BaseModel):
    """Non-secret settings: where the provider's data is and how to read it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class GcpSettings(SettingsModel):
    billing_export_table: str = Field(
        pattern=BILLING_EXPORT_TABLE,
        description="the BigQuery billing export table as project.dataset.table, e.g. "
        "my-project.billing.gcp_billing_export_v1_0123AB_456789_ABCDEF",
    )

    def table_parts(self) -> tuple[str, str, str]:
        """(project, dataset, table) of the billing export."""
        match = re.fullmatch(BILLING_EXPORT_TABLE, self.billing_export_table)
        assert match is not None  # the field's pattern guarantees it
        return match["project"], match["dataset"], match["table"]


class AwsSettings(SettingsModel):
    cur_location: DataLocation = Field(description="where the Cost and Usage Report files are")
    cur_version: Literal["auto", "legacy", "2.0"] = Field(
        "auto", description="the CUR format; auto detects it"
    )


class AzureSettings(SettingsModel):
    export_location: DataLocation = Field(description="where the Cost Management export files are")


class OpenAiSettings(SettingsModel):
    organization_id: str | None = Field(
        None, pattern=r"^org-[A-Za-z0-9_-]{1,64}$", description="org- and its id"
    )


class NoSettings(SettingsModel):
    """The provider takes no settings."""


# -- the catalogue -----------------------------------------------------------------------------------

# provider → the credential's shape and the model of its object (or string) form
CREDENTIAL_MODELS: dict[str, tuple[Literal["object", "object-or-arn", "string"], type[BaseModel]]] = {
    "gcp": ("object", GcpServiceAccount),
    "aws": ("object-or-arn", AwsAccessKey),
    "azure": ("object", AzureServicePrincipal),
    "openai": ("string", OpenAiAdminKey),
    "anthropic": ("string", AnthropicAdminKey),
    "deepseek": ("string", DeepSeekKey),
}
SETTINGS_MODELS: dict[str, type[SettingsModel]] = {
    "gcp": GcpSettings, "aws": AwsSettings, "azure": AzureSettings,
    "openai": OpenAiSettings, "anthropic": NoSettings, "deepseek": NoSettings,
}  # fmt: skip
EXPECTED = {
    "gcp": "a service account key file (a JSON object, or a string holding it)",
    "aws": "an access key object {aws_access_key_id, aws_secret_access_key} or a role ARN string",
    "azure": "a service principal object {tenant_id, client_id, client_secret}",
    "openai": "an admin key string (sk-admin-...)",
    "anthropic": "an admin key string (sk-ant-admin...)",
    "deepseek": "an API key string (sk-...)",
}


def parse_credential(provider: str, credential: str | dict[str, Any]) -> Credential:
    """The provider's credential model for `credential`, or InvalidCredential naming the rule it breaks.

    Objects may also arrive as a string holding their JSON (as a key file is usually pasted).
    """
    shape, model = CREDENTIAL_MODELS[provider]
    subject = f"{provider} credential"
    value: Any = credential
    if shape != "string" and isinstance(value, str) and (shape == "object" or value.startswith("{")):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidCredential(f"{subject} is not JSON; expected {EXPECTED[provider]}") from None
    if shape == "object-or-arn" and isinstance(value, str):
        model = AwsRoleArn
    elif not isinstance(value, str if shape == "string" else dict):
        raise InvalidCredential(f"{subject} must be {EXPECTED[provider]}")
    try:
        return model.model_validate(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise _refusal(InvalidCredential, subject, exc, model, name_unknown=False) from None


def parse_settings(provider: str, settings: dict[str, Any]) -> SettingsModel:
    """The provider's settings model for `settings`, or InvalidSettings naming the field."""
    model = SETTINGS_MODELS[provider]
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        raise _refusal(InvalidSettings, f"{provider} settings", exc, model, name_unknown=True) from None


def settings_document(settings: SettingsModel) -> dict[str, Any]:
    """Settings as stored and shown: JSON values, unset optional ones left out."""
    return settings.model_dump(mode="json", exclude_none=True)


def _refusal(
    error: type[ValidationFailed], subject: str, exc: ValidationError, model: type[BaseModel], *,
    name_unknown: bool,
) -> ValidationFailed:  # fmt: skip
    """One 422 naming each failed field and rule, built without looking at the input."""
    problems = [_problem(e, model, name_unknown) for e in exc.errors(include_input=False, include_url=False)]
    message = f"{subject}: " + "; ".join(f"{field} {text}" if field else text for field, text in problems)
    return error(message, errors=[{"field": field, "message": text} for field, text in problems])


def _problem(error: Any, model: type[BaseModel], name_unknown: bool) -> tuple[str, str]:
    """(field, what is wrong with it) of one pydantic error, from its location and kind only."""
    loc = [str(part) for part in error["loc"] if str(part) != "root"]
    field = loc[0] if loc else ""
    kind = error["type"]
    known = {name: info for name, info in model.model_fields.items() if name != "root"}
    if kind == "extra_forbidden":
        accepted = ", ".join(known)
        if not name_unknown:
            return "", f"has a field it does not take (accepted: {accepted})"
        shown = field if len(field) <= 64 else field[:64] + "..."
        return shown, f"is not a setting of this provider (accepted: {accepted or 'none'})"
    if kind == "missing":
        return field, "is missing"
    if kind == "value_error":
        return field, str(error["ctx"]["error"])
    if kind == "literal_error":
        return field, f"must be {error['ctx']['expected']}"
    description = known[field].description if field in known else None
    return field, f"must be {description}" if description else "has the wrong type or format"
