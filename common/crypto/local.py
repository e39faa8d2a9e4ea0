"""Local keyring: a Tink AES256-GCM keyset file plays the key-encryption key (Cloud KMS in gcp mode).

Each secret gets its own data-encryption key (Tink's KmsEnvelopeAead), wrapped by the keyset's primary key.
The keyset is created on first use with owner-only permissions; rotating adds a new primary key while
older keys stay able to decrypt.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import tink
from tink import aead, cleartext_keyset_handle

from common.crypto.keyring import DecryptionFailed, Keyring, associated_data
from common.errors import ConfigurationError

aead.register()
_DEK_TEMPLATE = aead.aead_key_templates.AES256_GCM
_create_lock = threading.Lock()


def _read_keyset(path: Path) -> tink.KeysetHandle:
    try:
        return cleartext_keyset_handle.read(tink.JsonKeysetReader(path.read_text()))
    except (OSError, tink.TinkError) as exc:
        raise ConfigurationError(f"CONVERGENCE_HOME: cannot read the local keyset {path}: {exc}") from None


def _write_keyset(path: Path, handle: tink.KeysetHandle) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        cleartext_keyset_handle.write(tink.JsonKeysetWriter(stream), handle)
    os.replace(tmp, path)


class LocalKeyring(Keyring):
    """Envelope encryption under a keyset kept in a file (embedded and emulator modes)."""

    name = "local"

    def __init__(self, keyset_path: Path) -> None:
        self.keyset_path = Path(keyset_path)
        with _create_lock:
            if not self.keyset_path.exists():
                _write_keyset(self.keyset_path, tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM))
        self._envelope = aead.KmsEnvelopeAead(_DEK_TEMPLATE, _read_keyset(self.keyset_path).primitive(aead.Aead))

    def encrypt(self, tenant_id: str, purpose: str, plaintext: bytes) -> bytes:
        return self._envelope.encrypt(plaintext, associated_data(tenant_id, purpose))

    def decrypt(self, tenant_id: str, purpose: str, ciphertext: bytes) -> bytes:
        try:
            return self._envelope.decrypt(ciphertext, associated_data(tenant_id, purpose))
        except tink.TinkError:
            raise DecryptionFailed("ciphertext does not belong to this tenant and purpose, or was altered") from None
