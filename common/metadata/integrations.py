"""The integrations control table (`org_integration_credentials`): every statement that reads or writes it.

A row holds one provider's credential of one tenant, envelope-encrypted for that tenant with associated data
`integration:{provider}` (so a ciphertext cannot be replayed into another tenant or provider), its non-secret
settings as JSON, and when the integration was first set up. Storing replaces any earlier row of the provider
in one transaction, keeping that first `created_at`. The secret is decrypted only by `read_integration` and
`read_credential`, for the step that uses it; listing never touches it.

What a credential or a setting must look like is the provider's business (common/providers, a layer above):
this module stores and returns them as given, already checked by the integrations service.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from common.errors import TerminalError
from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.types import utcnow
from common.warehouse.base import Statement

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


def credential_purpose(provider: str) -> str:
    """Associated data purpose that binds a credential's ciphertext to its provider."""
    return f"integration:{provider}"


def store_integration(rt: Runtime, org: str, provider: str, secret: str, settings: dict[str, Any]) -> None:
    """Encrypt `secret` for the tenant and replace the provider's row with it, in one transaction."""
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


def list_integrations(rt: Runtime, org: str) -> list[dict[str, Any]]:
    """The tenant's integrations with their (non-secret) settings, by provider; never a credential."""
    rows = rt.warehouse.query(
        f"SELECT provider, status, validated, created_at, updated_at, settings FROM {control_ref(rt, TABLE)}"
        " WHERE org_slug = @org ORDER BY provider",
        {"org": org},
    )
    return [{**row, "settings": json.loads(row["settings"] or "{}")} for row in rows]


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


# -- for key rotation: every tenant's ciphertexts, and a compare-and-set of one -------------------------


def org_slugs(rt: Runtime) -> set[str]:
    """Every tenant that has stored a credential."""
    rows = rt.warehouse.query(f"SELECT DISTINCT org_slug FROM {control_ref(rt, TABLE)}")
    return {row["org_slug"] for row in rows}


def encrypted_credentials(rt: Runtime, org: str) -> list[dict[str, Any]]:
    """(provider, encrypted_credential) of each of a tenant's integrations, by provider."""
    return rt.warehouse.query(
        f"SELECT provider, encrypted_credential FROM {control_ref(rt, TABLE)}"
        " WHERE org_slug = @org ORDER BY provider",
        {"org": org},
    )


def replace_encrypted_credential_statement(
    rt: Runtime, org: str, provider: str, *, old: str, new: str
) -> Statement:
    """The UPDATE that swaps one credential's ciphertext, only if it is still `old` (compare and set)."""
    return (
        f"UPDATE {control_ref(rt, TABLE)} SET encrypted_credential = @new"
        " WHERE org_slug = @org AND provider = @id AND encrypted_credential = @old",
        {"new": new, "org": org, "id": provider, "old": old},
    )
