"""Encrypt and Decrypt of the Cloud KMS stand-in: its ciphertext format, AES-256-GCM, and CRC32C checks.

A ciphertext is `0x01 | version number (4 bytes, big-endian) | 12-byte nonce | AES-256-GCM(plaintext, tag)`,
sealed with the version's key material and with `CryptoKey name | 0x00 | additional authenticated data` as
GCM associated data, so a ciphertext moved to another CryptoKey or given other AAD does not decrypt. Real
Cloud KMS ciphertexts are opaque and laid out differently; only the behaviour matches: Decrypt takes the
CryptoKey name and uses the version recorded in the ciphertext, so ciphertexts of older versions keep
decrypting after a rotation while a disabled version refuses (FAILED_PRECONDITION).

Kept apart from the key state (kms_keys.py) and the gRPC service (kms_standin.py) because this is the one
place where bytes are sealed and opened; both functions run under the service's lock.
"""

from __future__ import annotations

import os
import struct

import google_crc32c
import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1

from convergence.emulators.kms_keys import VERSION_RE, Abort, KeyStore, State

MAX_PLAINTEXT_BYTES = 64 * 1024
MAX_AAD_BYTES = 64 * 1024
_FORMAT = 1
_HEADER = struct.Struct(">BI")
_NONCE_BYTES = 12
_TAG_BYTES = 16


def _crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def _associated_data(crypto_key_name: str, aad: bytes) -> bytes:
    return crypto_key_name.encode() + b"\x00" + aad


def _check_crc(field_name: str, data: bytes, given: int | None) -> bool:
    """Whether the client sent a checksum for `data` (then verified); a mismatch is INVALID_ARGUMENT."""
    if given is None:
        return False
    if given != _crc32c(data):
        message = f"The checksum in field {field_name} did not match the data in field {field_name[:-7]}."
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    return True


def encrypt(store: KeyStore, request: kms_v1.EncryptRequest) -> kms_v1.EncryptResponse:
    """Encrypt under the named version, or under the primary version of the named CryptoKey."""
    if VERSION_RE.match(request.name):
        crypto_key, version = store.version(request.name)
    else:
        crypto_key = store.key(request.name)
        if crypto_key.primary is None:
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"CryptoKey {crypto_key.name} has no primary version.",
            )
        version = crypto_key.versions[crypto_key.primary]
    if (
        len(request.plaintext) > MAX_PLAINTEXT_BYTES
        or len(request.additional_authenticated_data) > MAX_AAD_BYTES
    ):
        raise Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            "The plaintext or additional authenticated data is too large.",
        )
    verified_plaintext = _check_crc("plaintext_crc32c", request.plaintext, request.plaintext_crc32c)
    verified_aad = _check_crc(
        "additional_authenticated_data_crc32c", request.additional_authenticated_data,
        request.additional_authenticated_data_crc32c,
    )  # fmt: skip
    if version.state != State.ENABLED:
        raise Abort(grpc.StatusCode.FAILED_PRECONDITION, f"CryptoKeyVersion {version.number} is not enabled.")
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(version.material).encrypt(
        nonce, request.plaintext, _associated_data(crypto_key.name, request.additional_authenticated_data)
    )
    ciphertext = _HEADER.pack(_FORMAT, version.number) + nonce + sealed
    return kms_v1.EncryptResponse(
        name=f"{crypto_key.name}/cryptoKeyVersions/{version.number}",
        ciphertext=ciphertext,
        ciphertext_crc32c=_crc32c(ciphertext),
        verified_plaintext_crc32c=verified_plaintext,
        verified_additional_authenticated_data_crc32c=verified_aad,
        protection_level=kms_v1.ProtectionLevel.SOFTWARE,
    )


def decrypt(store: KeyStore, request: kms_v1.DecryptRequest) -> kms_v1.DecryptResponse:
    """Decrypt with the version the ciphertext names; anything malformed or forged is INVALID_ARGUMENT."""
    crypto_key = store.key(request.name)
    _check_crc("ciphertext_crc32c", request.ciphertext, request.ciphertext_crc32c)
    _check_crc(
        "additional_authenticated_data_crc32c", request.additional_authenticated_data,
        request.additional_authenticated_data_crc32c,
    )  # fmt: skip
    invalid = Abort(grpc.StatusCode.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid.")
    ciphertext = request.ciphertext
    if len(ciphertext) < _HEADER.size + _NONCE_BYTES + _TAG_BYTES:
        raise invalid
    form, number = _HEADER.unpack_from(ciphertext)
    version = crypto_key.versions.get(number)
    if form != _FORMAT or version is None:
        raise invalid
    if version.state != State.ENABLED:
        message = f"CryptoKeyVersion {crypto_key.name}/cryptoKeyVersions/{number} is not enabled."
        raise Abort(grpc.StatusCode.FAILED_PRECONDITION, message)
    nonce = ciphertext[_HEADER.size : _HEADER.size + _NONCE_BYTES]
    try:
        plaintext = AESGCM(version.material).decrypt(
            nonce, ciphertext[_HEADER.size + _NONCE_BYTES :],
            _associated_data(crypto_key.name, request.additional_authenticated_data),
        )  # fmt: skip
    except InvalidTag:
        raise invalid from None
    return kms_v1.DecryptResponse(
        plaintext=plaintext,
        plaintext_crc32c=_crc32c(plaintext),
        used_primary=number == crypto_key.primary,
        protection_level=kms_v1.ProtectionLevel.SOFTWARE,
    )
