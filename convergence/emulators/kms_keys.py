"""The key state of the Cloud KMS stand-in: key rings, CryptoKeys, their versions, rotation.

`KeyStore` holds everything the stand-in knows about keys, in memory, and answers the key-management RPCs
(CreateKeyRing, GetKeyRing, CreateCryptoKey, GetCryptoKey, CreateCryptoKeyVersion, GetCryptoKeyVersion,
ListCryptoKeyVersions, UpdateCryptoKeyVersion for the state only, UpdateCryptoKeyPrimaryVersion) with the
official client's proto messages. It lives apart from the gRPC service (kms_standin.py) so the rules of
Cloud KMS resources -- names, which version is primary, when a version may be used -- read in one place,
free of server plumbing; Encrypt and Decrypt (kms_encryption.py) look keys up here.

A `KeyStore` does no locking: the service serialises every call under its own lock. Refusals raise `Abort`
with the gRPC status code Cloud KMS would answer (NOT_FOUND, INVALID_ARGUMENT, ALREADY_EXISTS,
FAILED_PRECONDITION); the service turns it into the RPC's status.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1

_ID = r"[a-zA-Z0-9_-]{1,63}"
_LOCATION_RE = re.compile(r"^projects/[^/]+/locations/[a-zA-Z0-9_-]{1,63}$")
_KEY_RING_RE = re.compile(rf"^projects/[^/]+/locations/{_ID}/keyRings/{_ID}$")
CRYPTO_KEY_RE = re.compile(rf"^(?P<key>projects/[^/]+/locations/{_ID}/keyRings/{_ID}/cryptoKeys/{_ID})$")
VERSION_RE = re.compile(rf"^(?P<key>projects/[^/]+/locations/{_ID}/keyRings/{_ID}/cryptoKeys/{_ID})"
                        r"/cryptoKeyVersions/(?P<number>[1-9][0-9]{0,8})$")  # fmt: skip

State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
Purpose = kms_v1.CryptoKey.CryptoKeyPurpose
Algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm


class Abort(Exception):
    """An RPC error: a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class KeyVersion:
    """One CryptoKeyVersion: its number, its AES-256 key material, its state."""

    number: int
    material: bytes
    created: dt.datetime
    state: int = State.ENABLED


@dataclass
class CryptoKey:
    """One symmetric ENCRYPT_DECRYPT CryptoKey: its versions by number and the number of the primary one."""

    name: str
    created: dt.datetime
    versions: dict[int, KeyVersion] = field(default_factory=dict)
    primary: int | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def crypto_key_of(resource: str) -> str:
    """The CryptoKey name of a CryptoKey or CryptoKeyVersion name; any other resource name unchanged."""
    match = VERSION_RE.match(resource) or CRYPTO_KEY_RE.match(resource)
    return match["key"] if match else resource


def version_message(crypto_key: CryptoKey, version: KeyVersion) -> kms_v1.CryptoKeyVersion:
    return kms_v1.CryptoKeyVersion(
        name=f"{crypto_key.name}/cryptoKeyVersions/{version.number}",
        state=version.state,
        protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        algorithm=Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        create_time=version.created,
        generate_time=version.created,
    )


def key_message(crypto_key: CryptoKey) -> kms_v1.CryptoKey:
    message = kms_v1.CryptoKey(
        name=crypto_key.name,
        purpose=Purpose.ENCRYPT_DECRYPT,
        create_time=crypto_key.created,
        version_template=kms_v1.CryptoKeyVersionTemplate(
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
            algorithm=Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
        ),
    )
    if crypto_key.primary is not None:
        message.primary = version_message(crypto_key, crypto_key.versions[crypto_key.primary])
    return message


class KeyStore:
    """The stand-in's key rings and CryptoKeys, in memory; not thread-safe (the service locks around it)."""

    def __init__(self) -> None:
        self.key_rings: dict[str, dt.datetime] = {}
        self.keys: dict[str, CryptoKey] = {}

    # -- lookups and changes ------------------------------------------------------------------------------

    def key(self, name: str) -> CryptoKey:
        if not CRYPTO_KEY_RE.match(name):
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Resource name [{name}] does not represent a CryptoKey."
            )
        if name not in self.keys:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKey {name} not found.")
        return self.keys[name]

    def version(self, name: str) -> tuple[CryptoKey, KeyVersion]:
        match = VERSION_RE.match(name)
        if not match:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Resource name [{name}] is not a CryptoKeyVersion."
            )
        crypto_key = self.key(match["key"])
        version = crypto_key.versions.get(int(match["number"]))
        if version is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKeyVersion {name} not found.")
        return crypto_key, version

    @staticmethod
    def new_version(crypto_key: CryptoKey) -> KeyVersion:
        number = max(crypto_key.versions, default=0) + 1
        version = crypto_key.versions[number] = KeyVersion(
            number, AESGCM.generate_key(bit_length=256), _now()
        )
        return version

    def rotate(self, key: str) -> str:
        """Create a version and make it primary (what a rotation schedule does); its name."""
        version = self.new_version(self.key(key))
        self.keys[key].primary = version.number
        return f"{key}/cryptoKeyVersions/{version.number}"

    def ensure_key(self, key: str) -> str:
        """Create the key ring and CryptoKey of `key` unless they exist (for the local stack)."""
        if not CRYPTO_KEY_RE.match(key):
            raise ValueError(f"not a CryptoKey name: {key}")
        ring = key.rsplit("/cryptoKeys/", 1)[0]
        self.key_rings.setdefault(ring, _now())
        if key not in self.keys:
            crypto_key = self.keys[key] = CryptoKey(key, _now())
            crypto_key.primary = self.new_version(crypto_key).number
        return key

    # -- key-management RPCs ------------------------------------------------------------------------------

    def create_key_ring(self, request: kms_v1.CreateKeyRingRequest) -> kms_v1.KeyRing:
        name = f"{request.parent}/keyRings/{request.key_ring_id}"
        if not _LOCATION_RE.match(request.parent) or not _KEY_RING_RE.match(name):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid key ring name {name}.")
        if name in self.key_rings:
            raise Abort(grpc.StatusCode.ALREADY_EXISTS, f"KeyRing {name} already exists.")
        self.key_rings[name] = _now()
        return kms_v1.KeyRing(name=name, create_time=self.key_rings[name])

    def get_key_ring(self, request: kms_v1.GetKeyRingRequest) -> kms_v1.KeyRing:
        if request.name not in self.key_rings:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"KeyRing {request.name} not found.")
        return kms_v1.KeyRing(name=request.name, create_time=self.key_rings[request.name])

    def create_crypto_key(self, request: kms_v1.CreateCryptoKeyRequest) -> kms_v1.CryptoKey:
        name = f"{request.parent}/cryptoKeys/{request.crypto_key_id}"
        if request.parent not in self.key_rings:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"KeyRing {request.parent} not found.")
        if not CRYPTO_KEY_RE.match(name):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid CryptoKey id {request.crypto_key_id!r}.")
        if request.crypto_key.purpose != Purpose.ENCRYPT_DECRYPT:
            raise Abort(grpc.StatusCode.UNIMPLEMENTED, "The KMS stand-in supports only ENCRYPT_DECRYPT keys.")
        if name in self.keys:
            raise Abort(grpc.StatusCode.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
        crypto_key = self.keys[name] = CryptoKey(name, _now())
        if not request.skip_initial_version_creation:
            crypto_key.primary = self.new_version(crypto_key).number
        return key_message(crypto_key)

    def get_crypto_key(self, request: kms_v1.GetCryptoKeyRequest) -> kms_v1.CryptoKey:
        return key_message(self.key(request.name))

    def create_version(self, request: kms_v1.CreateCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        crypto_key = self.key(request.parent)
        # Like Cloud KMS, a new version of a symmetric key is not primary until UpdateCryptoKeyPrimaryVersion.
        return version_message(crypto_key, self.new_version(crypto_key))

    def get_version(self, request: kms_v1.GetCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        return version_message(*self.version(request.name))

    def list_versions(
        self, request: kms_v1.ListCryptoKeyVersionsRequest
    ) -> kms_v1.ListCryptoKeyVersionsResponse:
        crypto_key = self.key(request.parent)
        versions = [version_message(crypto_key, crypto_key.versions[n]) for n in sorted(crypto_key.versions)]
        return kms_v1.ListCryptoKeyVersionsResponse(crypto_key_versions=versions, total_size=len(versions))

    def update_version(self, request: kms_v1.UpdateCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        if list(request.update_mask.paths) != ["state"]:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "The KMS stand-in updates only the state field.")
        crypto_key, version = self.version(request.crypto_key_version.name)
        if request.crypto_key_version.state not in (State.ENABLED, State.DISABLED):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "state must be ENABLED or DISABLED.")
        version.state = request.crypto_key_version.state
        return version_message(crypto_key, version)

    def update_primary(self, request: kms_v1.UpdateCryptoKeyPrimaryVersionRequest) -> kms_v1.CryptoKey:
        crypto_key = self.key(request.name)
        _, version = self.version(f"{request.name}/cryptoKeyVersions/{request.crypto_key_version_id}")
        if version.state != State.ENABLED:
            raise Abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"CryptoKeyVersion {version.number} is not enabled."
            )
        crypto_key.primary = version.number
        return key_message(crypto_key)
