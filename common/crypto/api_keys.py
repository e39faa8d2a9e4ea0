"""Tenant API keys: `{org_slug}_api_` + 32 random base62 characters + a 6-character checksum.

190 bits of randomness. The CRC32 checksum lets a mistyped or made-up key be refused without a lookup.
Keys are never stored: only their SHA-256 (for lookup) and an envelope-encrypted copy.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib

from common.tenancy import TENANT_ID_RE

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
SEPARATOR = "_api_"
KEY_PURPOSE = "api_key"


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(prefix_and_random: str) -> str:
    return _base62(zlib.crc32(prefix_and_random.encode()), CHECKSUM_LENGTH)


def generate_api_key(org_slug: str) -> str:
    """A new key for an organisation."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    body = f"{org_slug}{SEPARATOR}{random_part}"
    return body + _checksum(body)


def parse_api_key(key: str) -> str | None:
    """The org slug a well-formed key names, or None when the key is malformed or its checksum is wrong."""
    if not isinstance(key, str) or len(key) > 200:
        return None
    org_slug, sep, tail = key.rpartition(SEPARATOR)
    if not sep or not TENANT_ID_RE.fullmatch(org_slug):
        return None
    if len(tail) != RANDOM_LENGTH + CHECKSUM_LENGTH or any(c not in ALPHABET for c in tail):
        return None
    expected = _checksum(f"{org_slug}{SEPARATOR}{tail[:RANDOM_LENGTH]}")
    if not hmac.compare_digest(expected, tail[RANDOM_LENGTH:]):
        return None
    return org_slug


def hash_api_key(key: str) -> str:
    """Hex SHA-256 of a key: what is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """A recognisable, non-secret fragment of a key for listings and logs."""
    org_slug, _, tail = key.rpartition(SEPARATOR)
    return f"{org_slug}{SEPARATOR}{tail[:4]}…"
