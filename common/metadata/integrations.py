"""The integrations control table (`org_integration_credentials`): every statement that reads or writes it.

A row holds one provider's credential of one tenant, envelope-encrypted for that tenant with associated data
`integration:{provider}` (so a ciphertext cannot be replayed into another tenant or provider), its non-secret
settings as JSON, and when the integration was first set up. Storing replaces any earlier row of the provider
in one transaction, keeping that first `created_at`. The secret is decrypted only by `read_integration`,
`find_integration` and `read_credential`, for the step or check that uses it; listing never touches it.
Deleting removes the row itself.

Each row also records what the provider's read-only check last said: `status` (ACTIVE, UNVERIFIED, INVALID),
`validated` (ACTIVE only), `message` and `checked_at`. The last two are nullable columns added after the
table's first release: this module adds them to a table created before (once per instance), and a row
stored before checks existed (no `checked_at`) reads as UNVERIFIED, since nothing ever proved it.

What a credential or a setting must look like is the provider's business (common/providers, a layer above):
this module stores and returns them as given, already checked by the integrations service.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from common.crypto.keyring import DecryptionFailed
from common.errors import TerminalError
from common.metadata.control_dataset import control_ref
from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.types import utcnow
from common.warehouse.base import Statement
from common.warehouse.sql import quote_identifier

TABLE = "org_integration_credentials"
CHECK_COLUMNS = ("message", "checked_at")  # nullable, added after the table's first release
_COLUMNS_READY = "integration_check_columns_ready"  # runtime cache key: the columns are known to exist
NEVER_CHECKED = "stored before credentials were tried with their provider, so checked for its format only"


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
    status: str = "UNVERIFIED"
    message: str | None = None
    checked_at: dt.datetime | None = field(default=None, compare=False)
    # The stored ciphertext: says which credential a check was of (record_check compares it).
    ciphertext: str = field(default="", repr=False, compare=False)


def credential_purpose(provider: str) -> str:
    """Associated data purpose that binds a credential's ciphertext to its provider."""
    return f"integration:{provider}"


def ensure_check_columns(rt: Runtime) -> None:
    """Add the nullable check columns to a table created before they existed (once per instance)."""
    if rt.caches.get(_COLUMNS_READY):
        return
    present = {name.lower() for name in rt.warehouse.table_columns(rt.settings.control_dataset, TABLE)}
    for column in load_schema("control", TABLE).fields:
        if column.name in CHECK_COLUMNS and column.name not in present:
            rt.warehouse.execute(
                f"ALTER TABLE {control_ref(rt, TABLE)} ADD COLUMN IF NOT EXISTS"
                f" {quote_identifier(column.name)} {column.standard_sql_type()}"
            )
    rt.caches[_COLUMNS_READY] = True


def store_integration(
    rt: Runtime,
    org: str,
    provider: str,
    secret: str,
    settings: dict[str, Any],
    *,
    status: str,
    message: str,
    checked_at: dt.datetime,
) -> None:
    """Encrypt `secret` for the tenant and replace the provider's row with it, in one transaction, with what
    the provider's check said of it (`status`, `message`, `checked_at`; ACTIVE alone counts as validated)."""
    ensure_check_columns(rt)
    ciphertext = base64.b64encode(
        rt.keyring.encrypt(org, credential_purpose(provider), secret.encode())
    ).decode()
    table = control_ref(rt, TABLE)
    params = {"org": org, "provider": provider, "ciphertext": ciphertext,
              "settings": json.dumps(settings, sort_keys=True), "now": utcnow(), "status": status,
              "validated": status == "ACTIVE", "message": message, "checked_at": checked_at}  # fmt: skip
    # Insert the new row first (so it inherits the first created_at), then drop every other row of it.
    insert = (
        f"INSERT INTO {table} (org_slug, provider, encrypted_credential, settings, status, validated,"
        " created_at, updated_at, message, checked_at) SELECT @org, @provider, @ciphertext, @settings,"
        f" @status, @validated, COALESCE((SELECT MIN(created_at) FROM {table} WHERE org_slug = @org"
        " AND provider = @provider), @now), @now, @message, @checked_at"
    )
    delete = (
        f"DELETE FROM {table} WHERE org_slug = @org AND provider = @provider"
        " AND encrypted_credential != @ciphertext"
    )
    with rt.claims.hold(f"integration/{org}/{provider}"):
        rt.warehouse.run_atomically([(insert, params), (delete, params)])


def _checked(row: dict[str, Any]) -> dict[str, Any]:
    """A row's check as it reads: a row never checked (stored before checks existed) is UNVERIFIED."""
    if row["checked_at"] is None:
        return {**row, "status": "UNVERIFIED", "validated": False, "message": row["message"] or NEVER_CHECKED}
    return {**row, "validated": bool(row["validated"]) and row["status"] == "ACTIVE"}


def list_integrations(rt: Runtime, org: str, provider: str | None = None) -> list[dict[str, Any]]:
    """The tenant's integrations (of `provider` only, when given) with their (non-secret) settings and last
    check, by provider; never a credential."""
    ensure_check_columns(rt)
    only = " AND provider = @provider" if provider is not None else ""
    rows = rt.warehouse.query(
        "SELECT provider, status, validated, message, checked_at, created_at, updated_at, settings"
        f" FROM {control_ref(rt, TABLE)} WHERE org_slug = @org{only} ORDER BY provider",
        {"org": org} | ({"provider": provider} if provider is not None else {}),
    )
    return [{**_checked(row), "settings": json.loads(row["settings"] or "{}")} for row in rows]


def _stored_row(rt: Runtime, org: str, provider: str) -> dict[str, Any] | None:
    ensure_check_columns(rt)
    rows = rt.warehouse.query(
        "SELECT encrypted_credential, settings, status, validated, message, checked_at, created_at,"
        f" updated_at FROM {control_ref(rt, TABLE)} WHERE org_slug = @org AND provider = @provider"
        " ORDER BY updated_at DESC LIMIT 1",
        {"org": org, "provider": provider},
    )
    return _checked(rows[0]) if rows else None


class CredentialUnreadable(TerminalError):
    """The stored ciphertext is not one this tenant's key made for this provider (altered or misplaced)."""

    status = 422
    code = "credential_unreadable"


def _decrypt(rt: Runtime, org: str, provider: str, row: dict[str, Any]) -> str:
    """The stored credential in clear; a row that is not a ciphertext of this tenant's key is refused clearly."""
    try:
        ciphertext = base64.b64decode(row["encrypted_credential"] or "", validate=True)
        return rt.keyring.decrypt(org, credential_purpose(provider), ciphertext).decode()
    except (binascii.Error, UnicodeDecodeError, DecryptionFailed):
        raise CredentialUnreadable(
            f"the stored {provider} credential of {org} cannot be read; set the integration up again with"
            f" POST /api/v1/integrations/{org}/{provider}/setup",
        ) from None


def find_integration(rt: Runtime, org: str, provider: str) -> Integration | None:
    """The tenant's integration of `provider`, decrypted (only inside the step or check that needs it), or
    None when there is none."""
    row = _stored_row(rt, org, provider)
    if row is None:
        return None
    return Integration(
        org_slug=org,
        provider=provider,
        settings=json.loads(row["settings"] or "{}"),
        credential=SecretStr(_decrypt(rt, org, provider, row)),
        validated=row["validated"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=row["status"],
        message=row["message"],
        checked_at=row["checked_at"],
        ciphertext=row["encrypted_credential"],
    )


def read_integration(rt: Runtime, org: str, provider: str) -> Integration:
    """The tenant's integration of `provider`, decrypted (only inside the step that needs it).

    Raises IntegrationMissing when the tenant has not set one up, saying how to.
    """
    integration = find_integration(rt, org, provider)
    if integration is None:
        raise IntegrationMissing(
            f"{org} has no {provider} integration: set one up with"
            f" POST /api/v1/integrations/{org}/{provider}/setup",
            provider=provider,
        )
    return integration


def record_check(
    rt: Runtime,
    org: str,
    provider: str,
    *,
    ciphertext: str,
    status: str,
    message: str,
    checked_at: dt.datetime,
) -> bool:
    """Record what a check of the stored credential `ciphertext` found; False (nothing written) when the
    integration was replaced or deleted meanwhile, so a check never labels a credential it did not try."""
    ensure_check_columns(rt)
    changed = rt.warehouse.execute(
        f"UPDATE {control_ref(rt, TABLE)} SET status = @status, validated = @validated, message = @message,"
        " checked_at = @checked_at WHERE org_slug = @org AND provider = @provider"
        " AND encrypted_credential = @ciphertext",
        {"status": status, "validated": status == "ACTIVE", "message": message, "checked_at": checked_at,
         "org": org, "provider": provider, "ciphertext": ciphertext},
    )  # fmt: skip
    return changed > 0


def delete_integration(rt: Runtime, org: str, provider: str) -> bool:
    """Delete the tenant's integration of `provider`, credential and all; False when there was none."""
    with rt.claims.hold(f"integration/{org}/{provider}"):
        deleted = rt.warehouse.execute(
            f"DELETE FROM {control_ref(rt, TABLE)} WHERE org_slug = @org AND provider = @provider",
            {"org": org, "provider": provider},
        )
    return deleted > 0


def read_credential(rt: Runtime, org: str, provider: str) -> str | None:
    """The decrypted credential of one provider as stored, or None when there is none."""
    row = _stored_row(rt, org, provider)
    return None if row is None else _decrypt(rt, org, provider, row)


# -- for key rotation: every tenant's ciphertexts, and a compare-and-set of one -------------------------


def org_slugs(rt: Runtime) -> set[str]:
    """Every tenant that has stored a credential."""
    rows = rt.warehouse.query(f"SELECT DISTINCT org_slug FROM {control_ref(rt, TABLE)}")
    return {row["org_slug"] for row in rows}


def orgs_with_integration(rt: Runtime, provider: str, orgs: list[str]) -> set[str]:
    """Those of `orgs` that have stored an integration of `provider`, whatever its status (one query)."""
    if not orgs:
        return set()
    rows = rt.warehouse.query(
        f"SELECT DISTINCT org_slug FROM {control_ref(rt, TABLE)}"
        " WHERE provider = @provider AND org_slug IN UNNEST(@orgs)",
        {"provider": provider, "orgs": orgs},
    )
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
    sql = (
        f"UPDATE {control_ref(rt, TABLE)} SET encrypted_credential = @new"
        " WHERE org_slug = @org AND provider = @id AND encrypted_credential = @old"
    )
    return sql, {"new": new, "org": org, "id": provider, "old": old}
