"""A tenant's provider integrations: format-checked, envelope-encrypted credentials bound to tenant and provider.

Setup checks the credential's format and the settings (common/services/provider_credentials.py), encrypts the
credential with associated data `integration:{provider}` for the tenant, and replaces any earlier credential
of that provider in one transaction, keeping when the integration was first set up. The secret is never
echoed, listed or logged; steps read it with `read_integration`, decrypted only where it is used.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from common.contracts.requests import IntegrationSetupRequest
from common.errors import BadRequest, PayloadTooLarge, TerminalError
from common.metadata.control import control_ref
from common.runtime import Runtime
from common.services.provider_credentials import (
    PROVIDERS,
    Credential,
    SettingsModel,
    parse_credential,
    parse_settings,
    settings_document,
)
from common.types import utcnow

log = logging.getLogger(__name__)
MAX_CREDENTIAL_BYTES = 64 * 1024  # Cloud KMS's plaintext limit; envelope encryption keeps to it anyway
TABLE = "org_integration_credentials"


class IntegrationMissing(TerminalError):
    """A step needs a provider credential the tenant has not set up."""

    status = 422
    code = "integration_missing"


@dataclass(frozen=True)
class Integration:
    """One stored integration, decrypted for the step that uses it; its repr never shows the credential."""

    org_slug: str
    provider: str
    settings: dict[str, Any]
    credential: SecretStr
    validated: bool
    created_at: dt.datetime | None = field(default=None, compare=False)
    updated_at: dt.datetime | None = field(default=None, compare=False)

    def parsed_credential(self) -> Credential:
        """The credential as its provider's model (e.g. GcpServiceAccount, AwsAccessKey, DeepSeekKey)."""
        return parse_credential(self.provider, self.credential.get_secret_value())

    def parsed_settings(self) -> SettingsModel:
        """The settings as their provider's model (e.g. GcpSettings.table_parts())."""
        return parse_settings(self.provider, self.settings)


def credential_purpose(provider: str) -> str:
    """Associated data purpose that binds a credential's ciphertext to its provider."""
    return f"integration:{provider}"


def _require_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise BadRequest(f"provider must be one of: {', '.join(PROVIDERS)}", code="unknown_provider")


def setup_integration(
    rt: Runtime, org: str, provider: str, request: IntegrationSetupRequest
) -> dict[str, Any]:
    """Check, encrypt and store (replacing any earlier) the credential of one provider; never echo it."""
    _require_provider(provider)
    secret = request.credential if isinstance(request.credential, str) else json.dumps(request.credential)
    if len(secret.encode()) > MAX_CREDENTIAL_BYTES:
        raise PayloadTooLarge(f"credential is larger than {MAX_CREDENTIAL_BYTES} bytes")
    parse_credential(provider, request.credential)
    settings = settings_document(parse_settings(provider, request.settings))
    ciphertext = base64.b64encode(
        rt.keyring.encrypt(org, credential_purpose(provider), secret.encode())
    ).decode()
    table = control_ref(rt, TABLE)
    params = {"org": org, "provider": provider, "ciphertext": ciphertext,
              "settings": json.dumps(settings, sort_keys=True), "now": utcnow()}  # fmt: skip
    # Insert the new row first (so it inherits the first created_at), then drop every other row of it.
    insert = (
        f"INSERT INTO {table} (org_slug, provider, encrypted_credential, settings, status, validated, created_at,"
        " updated_at) SELECT @org, @provider, @ciphertext, @settings, 'ACTIVE', TRUE, COALESCE((SELECT"
        f" MIN(created_at) FROM {table} WHERE org_slug = @org AND provider = @provider), @now), @now"
    )
    delete = (
        f"DELETE FROM {table} WHERE org_slug = @org AND provider = @provider"
        " AND encrypted_credential != @ciphertext"
    )
    with rt.warehouse.lock(f"integration:{org}:{provider}"):
        rt.warehouse.run_atomically([(insert, params), (delete, params)])
    log.info("stored the %s integration of %s (format validated)", provider, org)
    return {
        "org_slug": org,
        "provider": provider,
        "status": "ACTIVE",
        "validated": True,
        "settings": settings,
    }


def list_integrations(rt: Runtime, org: str) -> dict[str, Any]:
    """The tenant's integrations with their (non-secret) settings; never a credential."""
    rows = rt.warehouse.query(
        f"SELECT provider, status, validated, created_at, updated_at, settings FROM {control_ref(rt, TABLE)}"
        " WHERE org_slug = @org ORDER BY provider",
        {"org": org},
    )
    return {"integrations": [{**row, "settings": json.loads(row["settings"] or "{}")} for row in rows]}


def _stored_row(rt: Runtime, org: str, provider: str) -> dict[str, Any] | None:
    rows = rt.warehouse.query(
        f"SELECT encrypted_credential, settings, validated, created_at, updated_at FROM {control_ref(rt, TABLE)}"
        " WHERE org_slug = @org AND provider = @provider ORDER BY updated_at DESC LIMIT 1",
        {"org": org, "provider": provider},
    )
    return rows[0] if rows else None


def _decrypt(rt: Runtime, org: str, provider: str, row: dict[str, Any]) -> str:
    ciphertext = base64.b64decode(row["encrypted_credential"])
    return rt.keyring.decrypt(org, credential_purpose(provider), ciphertext).decode()


def read_integration(rt: Runtime, org: str, provider: str) -> Integration:
    """The tenant's integration of `provider`, decrypted (only inside the step that needs it).

    Raises IntegrationMissing when the tenant has not set one up, saying how to.
    """
    _require_provider(provider)
    row = _stored_row(rt, org, provider)
    if row is None:
        raise IntegrationMissing(
            f"{org} has no {provider} integration: set one up with"
            f" POST /api/v1/integrations/{org}/{provider}/setup",
            provider=provider,
        )
    return Integration(
        org_slug=org,
        provider=provider,
        settings=json.loads(row["settings"] or "{}"),
        credential=SecretStr(_decrypt(rt, org, provider, row)),
        validated=bool(row["validated"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def read_credential(rt: Runtime, org: str, provider: str) -> str | None:
    """The decrypted credential of one provider as stored, or None when there is none."""
    row = _stored_row(rt, org, provider)
    return None if row is None else _decrypt(rt, org, provider, row)
