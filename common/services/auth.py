"""Who is calling: the root key for admin routes, a tenant's API key for tenant routes.

Known keys are remembered per instance (bounded, time-limited), so the hot path makes no warehouse query.
Rotation forgets the old key at once in the rotating instance; another instance may accept a revoked key
for at most API_KEY_CACHE_TTL_SECONDS (60 s by default) before it looks the key up again. The cache and the
key rows belong to the repository `common.metadata.api_keys`, whose every write forgets the org's entries.
"""

from __future__ import annotations

import hmac

from common.crypto.api_keys import generate_api_key, hash_api_key, parse_api_key
from common.errors import DependencyUnavailable, Forbidden, Unauthorized
from common.metadata import api_keys
from common.metadata.api_keys import KeyCache, key_cache
from common.runtime import Runtime

__all__ = ["KeyCache", "authenticate", "issue_api_key", "key_cache", "require_root", "require_tenant"]


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
    stored = api_keys.find_active(rt, digest)
    if stored is None or stored.org_slug != org_slug:
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
    with rt.claims.hold(f"api-key/{org_slug}"):  # two rotations at once end with one active key
        api_keys.replace_active_key(rt, org_slug, key)
    return key
