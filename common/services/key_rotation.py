"""Key rotation (`convergence keys rewrap`): stored secrets re-encrypted under each tenant's new primary key.

For every tenant that has a keyset, an integration credential or an API-key copy:
1. rotate its keyset for this rotation: a new primary data key (once per rotation id; the older keys stay, so
   nothing becomes unreadable), wrapped under the key-encryption key's current primary version;
2. re-encrypt each integration credential (org_integration_credentials.encrypted_credential) and each API-key
   copy (org_api_keys.encrypted_key, revoked ones too) not yet under that primary key. Each update is a
   compare-and-set on the old ciphertext, so a secret its owner replaced meanwhile is left as they wrote it;
3. mark the tenant's rotation complete.

The rotation id defaults to the KMS key's primary version: the first run after a Cloud KMS rotation gives
every tenant a new data key, and running again, after a crash midway or not, only finishes what is left.
Another rotation id (`--rotation-id`) rotates the data keys without a KMS rotation. Per-row decryption
failures are reported and leave that tenant's rotation open; a transient error stops the run, and re-running
resumes it.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.crypto.api_keys import KEY_PURPOSE
from common.crypto.keyring import DecryptionFailed
from common.crypto.tenant_keys import TenantKeysetKeyring, ciphertext_key_id
from common.errors import ConfigurationError, Conflict
from common.metadata import api_keys, integrations
from common.metadata.control_dataset import is_bootstrapped
from common.runtime import Runtime
from common.warehouse.base import Statement


class NotRotatable(ConfigurationError):
    code = "keyring_not_rotatable"


def _keyring(rt: Runtime) -> TenantKeysetKeyring:
    if not isinstance(rt.keyring, TenantKeysetKeyring):
        raise NotRotatable(
            f"CONVERGENCE_KEYRING: keys rewrap needs the gcp-kms keyring (tenant keysets); this runtime uses "
            f"the {rt.keyring.name} keyring"
        )
    return rt.keyring


def tenants_with_secrets(rt: Runtime, keyring: TenantKeysetKeyring) -> list[str]:
    """Every tenant with a keyset, a credential or an API-key copy, sorted."""
    return sorted(integrations.org_slugs(rt) | api_keys.org_slugs(rt) | set(keyring.store.tenant_ids()))


def _reencrypted(
    keyring: TenantKeysetKeyring, tenant: str, purpose: str, stored: str, primary: int | None
) -> str | None:
    """The stored ciphertext re-encrypted under the tenant's primary key, or None when it already is."""
    ciphertext = base64.b64decode(stored)
    if primary is not None and ciphertext_key_id(ciphertext) == primary:
        return None
    plaintext = keyring.decrypt(tenant, purpose, ciphertext)
    return base64.b64encode(keyring.encrypt(tenant, purpose, plaintext)).decode()


@dataclass(frozen=True)
class SecretColumn:
    """A control-table column of tenant ciphertexts (base64): the column naming each row, the purpose of a
    row's ciphertext, and the repository's read of a tenant's rows and compare-and-set of one of them."""

    table: str
    id_column: str
    value_column: str
    purpose: Callable[[dict[str, Any]], str]
    rows: Callable[[Runtime, str], list[dict[str, Any]]]
    replace: Callable[..., Statement]  # (rt, org, row id, *, old, new) -> the compare-and-set UPDATE


SECRET_COLUMNS = (
    SecretColumn(integrations.TABLE, "provider", "encrypted_credential",
                 lambda row: integrations.credential_purpose(row["provider"]),
                 integrations.encrypted_credentials, integrations.replace_encrypted_credential_statement),
    SecretColumn(api_keys.TABLE, "key_id", "encrypted_key", lambda row: KEY_PURPOSE,
                 api_keys.encrypted_copies, api_keys.replace_encrypted_copy_statement),
)  # fmt: skip


def _rewrap_column(
    rt: Runtime, keyring: TenantKeysetKeyring, tenant: str, column: SecretColumn, counts: Counter[str],
    failed: list[dict[str, str]],
) -> None:  # fmt: skip
    """Re-encrypt one tenant's ciphertexts of one column in one transaction, each update compare-and-set."""
    rows = column.rows(rt, tenant)
    primary = keyring.primary_key_id(tenant)
    statements = []
    for row in rows:
        try:
            new = _reencrypted(keyring, tenant, column.purpose(row), row[column.value_column], primary)
        except (DecryptionFailed, ValueError):
            failed.append(
                {"tenant_id": tenant, "table": column.table, column.id_column: row[column.id_column]}
            )
            continue
        if new is None:
            counts["already_current"] += 1
            continue
        old = row[column.value_column]
        statements.append(column.replace(rt, tenant, row[column.id_column], old=old, new=new))
    if statements:
        for affected in rt.warehouse.run_atomically(statements):
            counts[f"{column.table}_reencrypted" if affected else "changed_meanwhile"] += 1


def rewrap_tenant(
    rt: Runtime, keyring: TenantKeysetKeyring, tenant: str, *, rotation_id: str, kek_version: str | None,
    counts: Counter[str], failed: list[dict[str, str]],
) -> None:  # fmt: skip
    """Rotate one tenant's keyset, re-encrypt its secrets under the new primary key, close the rotation."""
    counts[f"keysets_{keyring.rotate_keyset(tenant, rotation_id=rotation_id, kek_version=kek_version)}"] += 1
    failures_before = len(failed)
    for column in SECRET_COLUMNS:
        _rewrap_column(rt, keyring, tenant, column, counts, failed)
    if len(failed) == failures_before:
        keyring.finish_rotation(tenant, rotation_id)


def rewrap_all(runtime: Runtime, *, rotation_id: str | None = None) -> dict[str, Any]:
    """Rotate every tenant's data key and re-encrypt every stored secret under it; counts of what was done."""
    keyring = _keyring(runtime)
    if not is_bootstrapped(runtime):
        raise Conflict(
            "the platform is not bootstrapped: there is nothing to rewrap", code="not_bootstrapped"
        )
    kek_version = keyring.kek.primary_version()
    rotation_id = rotation_id or kek_version
    if not rotation_id:
        raise ConfigurationError("the key-encryption key reports no primary version: pass a rotation id")
    counts: Counter[str] = Counter()
    failed: list[dict[str, str]] = []
    tenants = tenants_with_secrets(runtime, keyring)
    for tenant in tenants:
        rewrap_tenant(runtime, keyring, tenant, rotation_id=rotation_id, kek_version=kek_version,
                      counts=counts, failed=failed)  # fmt: skip
    return {
        "rotation_id": rotation_id,
        "kek_primary_version": kek_version,
        "tenants": len(tenants),
        "keysets_rotated": counts["keysets_rotated"],
        "keysets_rewrapped": counts["keysets_rewrapped"],
        "keysets_current": counts["keysets_current"],
        "tenants_without_keyset": counts["keysets_absent"],
        "credentials_reencrypted": counts["org_integration_credentials_reencrypted"],
        "api_keys_reencrypted": counts["org_api_keys_reencrypted"],
        "already_current": counts["already_current"],
        "changed_meanwhile": counts["changed_meanwhile"],
        "failed": failed,
    }
