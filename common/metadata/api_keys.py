"""The repository of `org_api_keys`: the only module with its SQL, and the instance's cache of known keys.

A key is never stored: only its SHA-256 (for lookup), a non-secret hint and an envelope-encrypted copy
(for key rotation), under the formats of `common.crypto.api_keys`. An organisation has at most one ACTIVE key;
issuing one revokes the others in the same transaction. Keys verified in this instance are remembered
(bounded, time-limited; `KeyCache`), and every write of an organisation's keys here forgets its entries at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from common.crypto.api_keys import KEY_PURPOSE, hash_api_key, key_hint
from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.types import utcnow
from common.warehouse.base import Statement

TABLE = "org_api_keys"
CACHE_KEY = "api_keys"


class KeyCache:
    """hash → org_slug for keys this instance has verified; bounded in size and age."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        self._entries: TTLCache[str, str] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> str | None:
        with self._lock:
            return self._entries.get(key_hash)

    def put(self, key_hash: str, org_slug: str) -> None:
        with self._lock:
            self._entries[key_hash] = org_slug

    def forget_org(self, org_slug: str) -> None:
        with self._lock:
            for key_hash in [h for h, org in self._entries.items() if org == org_slug]:
                self._entries.pop(key_hash, None)


_cache_lock = threading.Lock()


def key_cache(rt: Runtime) -> KeyCache:
    """The key cache of this runtime (one per function instance)."""
    with _cache_lock:
        cache = rt.caches.get(CACHE_KEY)
        if cache is None:
            cache = rt.caches[CACHE_KEY] = KeyCache(
                rt.settings.api_key_cache_size, rt.settings.api_key_cache_ttl_seconds
            )
        return cache


@dataclass(frozen=True)
class ActiveKey:
    """The lookup columns of an ACTIVE key row."""

    org_slug: str
    key_hash: str


def find_active(rt: Runtime, key_hash: str) -> ActiveKey | None:
    """The ACTIVE key stored under `key_hash` (the hash compared in constant time), or None."""
    rows = rt.warehouse.query(
        f"SELECT org_slug, key_hash FROM {control_ref(rt, TABLE)}"
        " WHERE key_hash = @key_hash AND status = 'ACTIVE' LIMIT 1",
        {"key_hash": key_hash},
    )
    if not rows or not hmac.compare_digest(rows[0]["key_hash"], key_hash):
        return None
    return ActiveKey(org_slug=rows[0]["org_slug"], key_hash=rows[0]["key_hash"])


def replace_active_key(rt: Runtime, org_slug: str, key: str, *, now: dt.datetime | None = None) -> str:
    """Make `key` the org's only ACTIVE key, revoking every older one in one transaction; the new key_id.

    Stores the key's hash, hint and a copy encrypted for the org (never the key); this instance forgets the
    org's cached keys at once.
    """
    now = now or utcnow()
    key_id = str(uuid.uuid4())
    encrypted = rt.keyring.encrypt(org_slug, KEY_PURPOSE, key.encode())
    table = control_ref(rt, TABLE)
    rt.warehouse.run_atomically(
        [
            (
                f"UPDATE {table} SET status = 'REVOKED', revoked_at = @now WHERE org_slug = @org AND status = 'ACTIVE'",
                {"org": org_slug, "now": now},
            ),
            (
                (
                    f"INSERT INTO {table} (key_id, org_slug, key_hash, key_hint, encrypted_key, status, created_at)"
                    " VALUES (@key_id, @org, @key_hash, @hint, @encrypted, 'ACTIVE', @now)"
                ),
                {
                    "key_id": key_id,
                    "org": org_slug,
                    "key_hash": hash_api_key(key),
                    "hint": key_hint(key),
                    "encrypted": base64.b64encode(encrypted).decode(),
                    "now": now,
                },
            ),
        ]
    )
    key_cache(rt).forget_org(org_slug)
    return key_id


def org_slugs(rt: Runtime) -> set[str]:
    """Every organisation with a stored key, active or revoked."""
    return {
        row["org_slug"]
        for row in rt.warehouse.query(f"SELECT DISTINCT org_slug FROM {control_ref(rt, TABLE)}")
    }


def encrypted_copies(rt: Runtime, org_slug: str) -> list[dict[str, Any]]:
    """key_id and encrypted_key (base64) of every key of the org, revoked ones too, by key_id."""
    return rt.warehouse.query(
        f"SELECT key_id, encrypted_key FROM {control_ref(rt, TABLE)} WHERE org_slug = @org ORDER BY key_id",
        {"org": org_slug},
    )


def replace_encrypted_copy_statement(
    rt: Runtime, org_slug: str, key_id: str, *, old: str, new: str
) -> Statement:
    """Compare-and-set of one key's encrypted copy: changes the row only while it still holds `old`."""
    return (
        (
            f"UPDATE {control_ref(rt, TABLE)} SET encrypted_key = @new"
            " WHERE org_slug = @org AND key_id = @id AND encrypted_key = @old"
        ),
        {"new": new, "org": org_slug, "id": key_id, "old": old},
    )
