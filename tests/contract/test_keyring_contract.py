"""The Keyring port's contract, run against every adapter in KEYRING_FACTORIES."""

from __future__ import annotations

import pytest

from common.crypto.keyring import DecryptionFailed, Keyring

SECRET = b'{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE..."}'


def test_round_trip(keyring: Keyring) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    assert isinstance(ciphertext, bytes)
    assert SECRET not in ciphertext
    assert keyring.decrypt("acme", "integration:gcp", ciphertext) == SECRET


def test_same_plaintext_encrypts_differently_each_time(keyring: Keyring) -> None:
    assert keyring.encrypt("acme", "api_key", SECRET) != keyring.encrypt("acme", "api_key", SECRET)


@pytest.mark.parametrize(
    ("tenant", "purpose"),
    [
        ("globex", "integration:gcp"),
        ("acme", "integration:aws"),
        ("acme", "api_key"),
        ("acme_two", "integration:gcp"),
    ],
)
def test_ciphertext_is_bound_to_its_tenant_and_purpose(keyring: Keyring, tenant: str, purpose: str) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    with pytest.raises(DecryptionFailed) as caught:
        keyring.decrypt(tenant, purpose, ciphertext)
    assert "PRIVATE KEY" not in str(caught.value)
    assert caught.value.code == "decryption_failed"


def test_tampered_ciphertext_is_refused(keyring: Keyring) -> None:
    ciphertext = keyring.encrypt("acme", "integration:gcp", SECRET)
    for index in (0, len(ciphertext) // 3, len(ciphertext) // 2, len(ciphertext) - 1):
        tampered = bytearray(ciphertext)
        tampered[index] ^= 0x80
        with pytest.raises(DecryptionFailed):
            keyring.decrypt("acme", "integration:gcp", bytes(tampered))
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("acme", "integration:gcp", ciphertext[:-4])
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("acme", "integration:gcp", ciphertext + b"\x00")


def test_large_plaintext_round_trips(keyring: Keyring) -> None:
    # 60 KiB: near Cloud KMS's 64 KiB limit, so the keyring must encrypt through an envelope.
    plaintext = bytes(range(256)) * 240
    assert len(plaintext) == 60 * 1024
    ciphertext = keyring.encrypt("acme", "integration:aws", plaintext)
    assert keyring.decrypt("acme", "integration:aws", ciphertext) == plaintext


def test_empty_plaintext_round_trips(keyring: Keyring) -> None:
    ciphertext = keyring.encrypt("acme", "api_key", b"")
    assert ciphertext
    assert keyring.decrypt("acme", "api_key", ciphertext) == b""
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("globex", "api_key", ciphertext)


def test_ciphertexts_of_two_tenants_do_not_cross(keyring: Keyring) -> None:
    mine = keyring.encrypt("acme", "integration:gcp", b"acme secret")
    theirs = keyring.encrypt("globex", "integration:gcp", b"globex secret")
    assert keyring.decrypt("acme", "integration:gcp", mine) == b"acme secret"
    assert keyring.decrypt("globex", "integration:gcp", theirs) == b"globex secret"
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("acme", "integration:gcp", theirs)
