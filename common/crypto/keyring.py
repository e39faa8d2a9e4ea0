"""The Keyring port: envelope encryption whose associated data binds a ciphertext to tenant and purpose.

A ciphertext made for (tenant A, "integration:gcp") cannot be decrypted as (tenant B, ...) nor as another
purpose: replaying a row into another tenant's records yields an error, never plaintext.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from common.errors import TerminalError
from common.tenancy import validate_tenant_id

ASSOCIATED_DATA_VERSION = "convergence/v1"


class DecryptionFailed(TerminalError):
    """A ciphertext was tampered with, or belongs to another tenant or purpose."""

    status = 500
    code = "decryption_failed"


def associated_data(tenant_id: str, purpose: str) -> bytes:
    """The bytes that bind a ciphertext to one tenant and one purpose."""
    validate_tenant_id(tenant_id, field="tenant_id")
    if not purpose or "|" in purpose:
        raise ValueError("purpose must be a non-empty string without '|'")
    return f"{ASSOCIATED_DATA_VERSION}|{tenant_id}|{purpose}".encode()


class Keyring(ABC):
    """Encrypts small secrets (credentials, API-key copies) for one tenant and purpose."""

    name: str = "keyring"

    @abstractmethod
    def encrypt(self, tenant_id: str, purpose: str, plaintext: bytes) -> bytes:
        """Envelope-encrypt plaintext, bound to tenant and purpose."""

    @abstractmethod
    def decrypt(self, tenant_id: str, purpose: str, ciphertext: bytes) -> bytes:
        """Decrypt a ciphertext made for exactly this tenant and purpose, or raise DecryptionFailed."""
