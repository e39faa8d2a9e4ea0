"""Who is calling: the root key for admin routes, a tenant's API key for tenant routes.

Known keys are remembered per instance (bounded, time-limited), so the hot path makes no warehouse query.
Rotation forgets the old key at once in the rotating instance; another instance may accept a revoked key
for at most API_KEY_CACHE_TTL_SECONDS (60 s by default) before it looks the key up again.
"""

from __future__ import annotations

import base64
import hmac
import threading
import uuid

from cachetools import TTLCache

from common.crypto.api_keys import KEY_PURPOSE, generate_api_key, hash_api_key, key_hint, parse_api_key
from common.errors import DependencyUnavailable, Forbidden, Unauthorized
from common.metadata.control import control_ref
from common.runtime import Runtime
from common.types import utcnow


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
        cache = rt.caches.get("api_keys")
        if cache is None:
            cache = rt.caches["api_keys"] = KeyCache(
                rt.settings.api_key_cache_size, rt.settings.api_key_cache_ttl_seconds
            )
        return cache


def require_root(rt: Runtime, presented: str | None) -> None:
    """Refuse unless the X-CA-Root-Key header carries the configured root key."""
    configured = rt.settings.ca_root_api_key
    if configured is None:
        raise DependencyUnavailable("this instance has no root key configured (CA_ROOT_API_KEY)", code="root_key_unset")
    if not presented:
        raise Unauthorized("the X-CA-Root-Key header is required", code="missing_root_key")
    if not hmac.compare_digest(presented.encode(), configured.get_secret_value().encode()):
        raise Unauthorized("the root key is not valid", code="invalid_root_key")


def authenticate(rt: Runtime, presented: str | None) -> str:
    """The org slug of a valid, active API key."""
    if not presented:
        raise Unauthorized("the X-API-Key header is required", code="missing_api_key")
    org_slug = parse_api_key(presented)
    if org_slug is None:
        raise Unauthorized("the API key is malformed", code="invalid_api_key")
    digest = hash_api_key(presented)
    cache = key_cache(rt)
    cached = cache.get(digest)
    if cached is not None:
        return cached
    rows = rt.warehouse.query(
        f"SELECT org_slug, key_hash FROM {control_ref(rt, 'org_api_keys')}"
        " WHERE key_hash = @key_hash AND status = 'ACTIVE' LIMIT 1",
        {"key_hash": digest},
    )
    if not rows or not hmac.compare_digest(rows[0]["key_hash"], digest) or rows[0]["org_slug"] != org_slug:
        raise Unauthorized("the API key is not valid", code="invalid_api_key")
    cache.put(digest, org_slug)
    return org_slug


def require_tenant(rt: Runtime, presented: str | None, org_in_path: str | None = None) -> str:
    """The caller's org; a key of another org than the one in the path is 403."""
    org_slug = authenticate(rt, presented)
    if org_in_path is not None and org_in_path != org_slug:
        raise Forbidden("this API key belongs to another organisation", code="wrong_organization")
    return org_slug


def issue_api_key(rt: Runtime, org_slug: str) -> str:
    """A new active key for the org; every older key of the org is revoked in the same transaction."""
    key = generate_api_key(org_slug)
    encrypted = rt.keyring.encrypt(org_slug, KEY_PURPOSE, key.encode())
    now = utcnow()
    table = control_ref(rt, "org_api_keys")
    rt.warehouse.run_atomically(
        [
            (
                f"UPDATE {table} SET status = 'REVOKED', revoked_at = @now WHERE org_slug = @org AND status = 'ACTIVE'",
                {"org": org_slug, "now": now},
            ),
            (
                f"INSERT INTO {table} (key_id, org_slug, key_hash, key_hint, encrypted_key, status, created_at)"
                " VALUES (@key_id, @org, @key_hash, @hint, @encrypted, 'ACTIVE', @now)",
                {
                    "key_id": str(uuid.uuid4()),
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
    return key
