"""What every provider package declares: its registry entry, and the bases of its credential and settings.

A credential is only ever checked for its shape here (no call leaves the platform). Secrets are `SecretStr`
and models hide their input in errors, so no part of a credential reaches a repr, a log or a response.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, RootModel, SecretStr, field_validator

from common.errors import ValidationFailed

GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class InvalidCredential(ValidationFailed):
    """The credential does not have its provider's format (422)."""

    code = "invalid_credential"


class InvalidSettings(ValidationFailed):
    """The settings are not the provider's settings, or a value has the wrong format (422)."""

    code = "invalid_settings"


# -- credentials -------------------------------------------------------------------------------------


class CredentialModel(BaseModel):
    """A provider credential object: frozen, secrets as SecretStr so no repr or log shows them."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def secret_matching(pattern: str, rule: str) -> Callable[[SecretStr], SecretStr]:
    """A SecretStr check against `pattern` whose failure names the rule, never the value."""

    def check(value: SecretStr) -> SecretStr:
        if not re.fullmatch(pattern, value.get_secret_value()):
            raise ValueError(f"must be {rule}")
        return value

    return check


class ApiKey(RootModel[SecretStr]):
    """An API key string; each provider's subclass says its format in `rule`."""

    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)
    rule: ClassVar[tuple[str, str]] = (r".+", "a key")  # (pattern, wording)

    @field_validator("root")
    @classmethod
    def _format(cls, value: SecretStr) -> SecretStr:
        pattern, wording = cls.rule
        return secret_matching(pattern, wording)(value)


@dataclass(frozen=True)
class CredentialSpec:
    """The forms a provider's credential may take: an object, a string, or either.

    An object may also arrive as a string holding its JSON (as a key file is usually pasted); when the
    provider takes a string form too, only a string starting with `{` is read as JSON.
    """

    expected: str  # what the tenant should send, as a refusal says it
    object_model: type[BaseModel] | None = None
    string_model: type[BaseModel] | None = None


# -- settings ----------------------------------------------------------------------------------------


class SettingsModel(BaseModel):
    """Non-secret settings: where the provider's data is and how to read it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class NoSettings(SettingsModel):
    """The provider takes no settings."""


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


# Where a provider's billing files are (a setting of file-based providers such as aws and azure).
DataLocation = Annotated[str, AfterValidator(_data_location)]


# -- the registry entry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSpec:
    """One provider as the platform knows it: what a tenant stores for it (credential and settings).

    `credential` is None for a provider that keeps no integration (the FOCUS import reads files only). The
    provider's steps, if any, are its package's `processors` module, which the processor registry finds.
    """

    name: str
    credential: CredentialSpec | None = None
    settings: type[SettingsModel] = NoSettings

    @property
    def has_integration(self) -> bool:
        return self.credential is not None
