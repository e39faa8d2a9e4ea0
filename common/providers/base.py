"""What every provider package declares: its registry entry, the bases of its credential and settings, and
the shape of its read-only check.

The models here check a credential's shape only (no call leaves the platform). Whether it works is the
provider's `verify` check (its package's verify module): one read-only call answering a `Verification`.
Secrets are `SecretStr` and models hide their input in errors, so no part of a credential reaches a repr, a
log or a response; `redact` cleans whatever text a provider answers before the platform repeats it, and
`scrub` cleans a check's whole message before it is answered, stored or logged.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, RootModel, SecretStr, field_validator

from common.contracts.integrations import IntegrationStatus
from common.errors import ValidationFailed

if TYPE_CHECKING:
    from common.runtime import Runtime

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
    """A provider credential object: frozen, secrets as SecretStr so no repr or log shows them.

    `also_secret` names plain fields that must not be shown either (e.g. a key file's private_key_id).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
    also_secret: ClassVar[tuple[str, ...]] = ()


def secret_values(credential: BaseModel) -> list[str]:
    """Every secret string a credential model holds: its SecretStr fields (or root) and `also_secret` ones."""
    fields = type(credential).model_fields
    extra = credential.model_extra or {}
    found = [
        value for value in (getattr(credential, name) for name in fields) if isinstance(value, SecretStr)
    ]
    for name in getattr(credential, "also_secret", ()):
        found.append(getattr(credential, name) if name in fields else extra.get(name))
    texts = [value.get_secret_value() if isinstance(value, SecretStr) else value for value in found]
    return [text for text in texts if isinstance(text, str) and text]


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


# -- the read-only check -----------------------------------------------------------------------------

REDACTED = "[redacted]"
MESSAGE_LIMIT = 500  # characters of a check's message
FRAGMENT = 8  # a provider's word sharing this many consecutive characters with a secret is redacted whole
MIN_PIECE = 6  # shorter secrets (or lines of one) are not searched for: they would match ordinary words
_WORD = re.compile(r"[^\s\"'`(),;<>\[\]{}]+")
_KEY_LIKE = re.compile(
    r"\b(?:sk|key)-[A-Za-z0-9_\-*.]{6,}|\bA(?:KIA|SIA)[A-Z0-9]{16}\b"
    r"|-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|$)",
    re.IGNORECASE | re.DOTALL,
)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Provider-supplied `text` safe to show: no secret, no word sharing 8 characters with one, nothing shaped
    like a key; one line, at most MESSAGE_LIMIT characters.

    Providers echo keys in their errors, sometimes whole, sometimes masked in part (`sk-admin-****abcd`).
    """
    known = sorted({s for s in secrets if s}, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, REDACTED)
    fragments = {s[i : i + FRAGMENT] for s in known for i in range(len(s) - FRAGMENT + 1)}

    def word(match: re.Match[str]) -> str:
        value = match.group()
        shared = any(value[i : i + FRAGMENT] in fragments for i in range(len(value) - FRAGMENT + 1))
        return REDACTED if shared else value

    return _one_line(_KEY_LIKE.sub(REDACTED, _WORD.sub(word, text)))


def scrub(text: str, secrets: Iterable[str], *, exact: Iterable[str] = ()) -> str:
    """The platform's own `text` (which may quote a provider) without any secret, any line of one (a PEM
    key's), or anything shaped like a key; one line, at most MESSAGE_LIMIT characters.

    Unlike `redact` it leaves words that merely resemble a secret alone, so paths and table names stay whole.
    `exact` strings are removed where they appear whole (e.g. the credential exactly as the tenant sent it).
    """
    pieces = {piece for s in secrets if s for piece in (s, *s.split()) if len(piece) >= MIN_PIECE}
    pieces |= {s for s in exact if len(s) >= MIN_PIECE}
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return _one_line(_KEY_LIKE.sub(REDACTED, text))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Verification:
    """What a provider's read-only check found: ACTIVE (proved), UNVERIFIED (not asked), INVALID (refused)."""

    status: IntegrationStatus
    message: str

    @property
    def validated(self) -> bool:
        return self.status == "ACTIVE"


def proved(message: str) -> Verification:
    """The provider answered the read-only call: the credential works."""
    return Verification("ACTIVE", message)


def unverified(message: str) -> Verification:
    """The check could not be made (the provider could not be reached, or there is no check): format only."""
    return Verification("UNVERIFIED", message)


def refused(message: str) -> Verification:
    """The provider refused the credential, or what it names does not exist or may not be read."""
    return Verification("INVALID", message)


@dataclass(frozen=True)
class VerificationRequest:
    """What a provider's check gets: the platform, the tenant, its credential and settings as their models.

    `timeout` bounds the one call (seconds); `secrets` are the credential's secret strings, for `redact`
    (which a check applies to whatever text it repeats from the provider).
    """

    runtime: Runtime
    tenant_id: str
    credential: BaseModel
    settings: SettingsModel
    timeout: float
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def redact(self, text: str) -> str:
        """Provider-supplied text without any part of this credential."""
        return redact(text, self.secrets)


Verifier = Callable[[VerificationRequest], Verification]


# -- the registry entry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderSpec:
    """One provider as the platform knows it: what a tenant stores for it (credential and settings), and
    how the platform proves a stored credential works (`verify`: one read-only call to the provider).

    `credential` is None for a provider that keeps no integration (the FOCUS import reads files only). The
    provider's steps, if any, are its package's `processors` module, which the processor registry finds.
    """

    name: str
    credential: CredentialSpec | None = None
    settings: type[SettingsModel] = NoSettings
    verify: Verifier | None = None

    @property
    def has_integration(self) -> bool:
        return self.credential is not None
