"""A local stand-in for Cloud KMS, because Google publishes no Cloud KMS emulator.

It serves the real gRPC service `google.cloud.kms.v1.KeyManagementService` on 127.0.0.1 only, so the official
google-cloud-kms client (and Tink's `tink.integration.gcpkms` on top of it) talks to it unchanged over an
insecure loopback channel. Requests and responses are the client's own proto messages.

Implemented: CreateKeyRing, GetKeyRing, CreateCryptoKey, GetCryptoKey, CreateCryptoKeyVersion,
GetCryptoKeyVersion, ListCryptoKeyVersions, UpdateCryptoKeyVersion (state only),
UpdateCryptoKeyPrimaryVersion, Encrypt and Decrypt for symmetric ENCRYPT_DECRYPT keys. Everything else
answers UNIMPLEMENTED.

How it differs from Cloud KMS (so nobody mistakes it for one):
- key material lives in memory and dies with the process; no IAM, no authentication, no quotas, no
  audit logs, no HSM/EXTERNAL protection levels, no automatic rotation schedule, no destroy/restore;
- a ciphertext is `0x01 | version number (4 bytes) | 12-byte nonce | AES-256-GCM(plaintext, tag)`, with
  the CryptoKey name and the additional authenticated data as GCM associated data. Real ciphertexts are
  opaque and differently laid out; only the behaviour matches: Decrypt takes the CryptoKey name and picks
  the version recorded in the ciphertext, so ciphertexts of older versions keep decrypting after rotation;
- error codes follow Cloud KMS (NOT_FOUND, INVALID_ARGUMENT for a bad ciphertext or a checksum mismatch,
  FAILED_PRECONDITION for a disabled version, ALREADY_EXISTS), messages are its own;
- test hooks (`calls`, `count`, `fail`, `rotate`) that the real service obviously has not.

Start it in-process with `start_kms_standin()`; `python -m convergence.emulators.kms_standin --port N` serves it
as a process for the local stack.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import struct
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import grpc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1

SERVICE = "google.cloud.kms.v1.KeyManagementService"
HOST = "127.0.0.1"
MAX_PLAINTEXT_BYTES = 64 * 1024
MAX_AAD_BYTES = 64 * 1024
_FORMAT = 1
_HEADER = struct.Struct(">BI")
_NONCE_BYTES = 12

_ID = r"[a-zA-Z0-9_-]{1,63}"
_LOCATION_RE = re.compile(r"^projects/[^/]+/locations/[a-zA-Z0-9_-]{1,63}$")
_KEY_RING_RE = re.compile(rf"^projects/[^/]+/locations/{_ID}/keyRings/{_ID}$")
_CRYPTO_KEY_RE = re.compile(rf"^(?P<key>projects/[^/]+/locations/{_ID}/keyRings/{_ID}/cryptoKeys/{_ID})$")
_VERSION_RE = re.compile(rf"^(?P<key>projects/[^/]+/locations/{_ID}/keyRings/{_ID}/cryptoKeys/{_ID})"
                         r"/cryptoKeyVersions/(?P<number>[1-9][0-9]{0,8})$")  # fmt: skip

State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
Purpose = kms_v1.CryptoKey.CryptoKeyPurpose
Algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm


class _Abort(Exception):
    """An RPC error: a gRPC status code and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Version:
    number: int
    material: bytes
    created: dt.datetime
    state: int = State.ENABLED


@dataclass
class _CryptoKey:
    name: str
    created: dt.datetime
    versions: dict[int, _Version] = field(default_factory=dict)
    primary: int | None = None


@dataclass(frozen=True)
class Call:
    """One RPC the stand-in answered (or refused): for tests that count KMS round trips."""

    method: str
    resource: str
    aad: bytes = b""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def _crypto_key_of(resource: str) -> str:
    match = _VERSION_RE.match(resource) or _CRYPTO_KEY_RE.match(resource)
    return match["key"] if match else resource


class KmsStandin:
    """An in-memory Cloud KMS behind a real gRPC server on 127.0.0.1."""

    def __init__(self, port: int = 0, *, workers: int = 8) -> None:
        self._lock = threading.Lock()
        self._key_rings: dict[str, dt.datetime] = {}
        self._keys: dict[str, _CryptoKey] = {}
        self._faults: dict[str, tuple[grpc.StatusCode, int | None]] = {}
        self.calls: list[Call] = []
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kms-standin")
        )
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, self._handlers()),)
        )
        self.port = self._server.add_insecure_port(f"{HOST}:{port}")
        if not self.port:
            raise OSError(f"the KMS stand-in cannot listen on {HOST}:{port}")

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """host:port for an insecure gRPC channel."""
        return f"{HOST}:{self.port}"

    def start(self) -> KmsStandin:
        self._server.start()
        return self

    def stop(self, grace: float | None = 0) -> None:
        self._server.stop(grace).wait()

    # -- test hooks ---------------------------------------------------------------------------------------

    def count(self, method: str | None = None, *, key: str | None = None, aad: bytes | None = None) -> int:
        """How many RPCs matched: by method, by CryptoKey (versions included) and by exact AAD."""
        with self._lock:
            return sum(
                1
                for c in self.calls
                if (method is None or c.method == method)
                and (key is None or _crypto_key_of(c.resource) == key)
                and (aad is None or c.aad == aad)
            )

    def fail(
        self, key: str, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE, times: int | None = None
    ) -> None:
        """Answer every RPC on `key` (or the next `times`) with `code`: an outage or quota of one key."""
        with self._lock:
            self._faults[key] = (code, times)

    def heal(self, key: str) -> None:
        """Stop injecting failures for `key`."""
        with self._lock:
            self._faults.pop(key, None)

    def rotate(self, key: str) -> str:
        """Create a version and make it primary (what a rotation schedule does); its name."""
        with self._lock:
            version = self._new_version(self._key(key))
            self._keys[key].primary = version.number
            return f"{key}/cryptoKeyVersions/{version.number}"

    def ensure_key(self, key: str) -> str:
        """Create the key ring and CryptoKey of `key` unless they exist (for the local stack)."""
        match = _CRYPTO_KEY_RE.match(key)
        if not match:
            raise ValueError(f"not a CryptoKey name: {key}")
        ring = key.rsplit("/cryptoKeys/", 1)[0]
        with self._lock:
            self._key_rings.setdefault(ring, _now())
            if key not in self._keys:
                crypto_key = self._keys[key] = _CryptoKey(key, _now())
                crypto_key.primary = self._new_version(crypto_key).number
        return key

    # -- plumbing -----------------------------------------------------------------------------------------

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        table: dict[str, tuple[Callable[[Any], Any], type, type, Callable[[Any], str]]] = {
            "CreateKeyRing": (self._create_key_ring, kms_v1.CreateKeyRingRequest, kms_v1.KeyRing,
                              lambda r: r.parent),
            "GetKeyRing": (self._get_key_ring, kms_v1.GetKeyRingRequest, kms_v1.KeyRing, lambda r: r.name),
            "CreateCryptoKey": (self._create_crypto_key, kms_v1.CreateCryptoKeyRequest, kms_v1.CryptoKey,
                                lambda r: f"{r.parent}/cryptoKeys/{r.crypto_key_id}"),
            "GetCryptoKey": (self._get_crypto_key, kms_v1.GetCryptoKeyRequest, kms_v1.CryptoKey,
                             lambda r: r.name),
            "CreateCryptoKeyVersion": (self._create_version, kms_v1.CreateCryptoKeyVersionRequest,
                                       kms_v1.CryptoKeyVersion, lambda r: r.parent),
            "GetCryptoKeyVersion": (self._get_version, kms_v1.GetCryptoKeyVersionRequest,
                                    kms_v1.CryptoKeyVersion, lambda r: r.name),
            "ListCryptoKeyVersions": (self._list_versions, kms_v1.ListCryptoKeyVersionsRequest,
                                      kms_v1.ListCryptoKeyVersionsResponse, lambda r: r.parent),
            "UpdateCryptoKeyVersion": (self._update_version, kms_v1.UpdateCryptoKeyVersionRequest,
                                       kms_v1.CryptoKeyVersion, lambda r: r.crypto_key_version.name),
            "UpdateCryptoKeyPrimaryVersion": (self._update_primary,
                                              kms_v1.UpdateCryptoKeyPrimaryVersionRequest, kms_v1.CryptoKey,
                                              lambda r: r.name),
            "Encrypt": (self._encrypt, kms_v1.EncryptRequest, kms_v1.EncryptResponse, lambda r: r.name),
            "Decrypt": (self._decrypt, kms_v1.DecryptRequest, kms_v1.DecryptResponse, lambda r: r.name),
        }  # fmt: skip
        return {
            method: grpc.unary_unary_rpc_method_handler(
                self._serve(method, handler, resource),
                request_deserializer=request_type.deserialize,
                response_serializer=response_type.serialize,
            )
            for method, (handler, request_type, response_type, resource) in table.items()
        }

    def _serve(self, method: str, handler: Callable[[Any], Any], resource: Callable[[Any], str]) -> Callable:
        def serve(request: Any, context: grpc.ServicerContext) -> Any:
            name = resource(request)
            aad = getattr(request, "additional_authenticated_data", b"") or b""
            with self._lock:
                self.calls.append(Call(method, name, aad))
                fault = self._take_fault(_crypto_key_of(name))
            if fault is not None:
                context.abort(fault, f"injected by the KMS stand-in for {_crypto_key_of(name)}")
            try:
                with self._lock:
                    return handler(request)
            except _Abort as exc:
                context.abort(exc.code, exc.message)

        return serve

    def _take_fault(self, key: str) -> grpc.StatusCode | None:
        if key not in self._faults:
            return None
        code, times = self._faults[key]
        if times is not None:
            if times <= 1:
                del self._faults[key]
            else:
                self._faults[key] = (code, times - 1)
        return code

    def _key(self, name: str) -> _CryptoKey:
        if not _CRYPTO_KEY_RE.match(name):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Resource name [{name}] does not represent a CryptoKey."
            )
        if name not in self._keys:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKey {name} not found.")
        return self._keys[name]

    def _version(self, name: str) -> tuple[_CryptoKey, _Version]:
        match = _VERSION_RE.match(name)
        if not match:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Resource name [{name}] is not a CryptoKeyVersion."
            )
        crypto_key = self._key(match["key"])
        version = crypto_key.versions.get(int(match["number"]))
        if version is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKeyVersion {name} not found.")
        return crypto_key, version

    def _new_version(self, crypto_key: _CryptoKey) -> _Version:
        number = max(crypto_key.versions, default=0) + 1
        version = crypto_key.versions[number] = _Version(number, AESGCM.generate_key(bit_length=256), _now())
        return version

    def _version_message(self, crypto_key: _CryptoKey, version: _Version) -> kms_v1.CryptoKeyVersion:
        return kms_v1.CryptoKeyVersion(
            name=f"{crypto_key.name}/cryptoKeyVersions/{version.number}",
            state=version.state,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
            algorithm=Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            create_time=version.created,
            generate_time=version.created,
        )

    def _key_message(self, crypto_key: _CryptoKey) -> kms_v1.CryptoKey:
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
            message.primary = self._version_message(crypto_key, crypto_key.versions[crypto_key.primary])
        return message

    # -- key management -----------------------------------------------------------------------------------

    def _create_key_ring(self, request: kms_v1.CreateKeyRingRequest) -> kms_v1.KeyRing:
        name = f"{request.parent}/keyRings/{request.key_ring_id}"
        if not _LOCATION_RE.match(request.parent) or not _KEY_RING_RE.match(name):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid key ring name {name}.")
        if name in self._key_rings:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"KeyRing {name} already exists.")
        self._key_rings[name] = _now()
        return kms_v1.KeyRing(name=name, create_time=self._key_rings[name])

    def _get_key_ring(self, request: kms_v1.GetKeyRingRequest) -> kms_v1.KeyRing:
        if request.name not in self._key_rings:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"KeyRing {request.name} not found.")
        return kms_v1.KeyRing(name=request.name, create_time=self._key_rings[request.name])

    def _create_crypto_key(self, request: kms_v1.CreateCryptoKeyRequest) -> kms_v1.CryptoKey:
        name = f"{request.parent}/cryptoKeys/{request.crypto_key_id}"
        if request.parent not in self._key_rings:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"KeyRing {request.parent} not found.")
        if not _CRYPTO_KEY_RE.match(name):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid CryptoKey id {request.crypto_key_id!r}.")
        if request.crypto_key.purpose != Purpose.ENCRYPT_DECRYPT:
            raise _Abort(
                grpc.StatusCode.UNIMPLEMENTED, "The KMS stand-in supports only ENCRYPT_DECRYPT keys."
            )
        if name in self._keys:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
        crypto_key = self._keys[name] = _CryptoKey(name, _now())
        if not request.skip_initial_version_creation:
            crypto_key.primary = self._new_version(crypto_key).number
        return self._key_message(crypto_key)

    def _get_crypto_key(self, request: kms_v1.GetCryptoKeyRequest) -> kms_v1.CryptoKey:
        return self._key_message(self._key(request.name))

    def _create_version(self, request: kms_v1.CreateCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        crypto_key = self._key(request.parent)
        # Like Cloud KMS, a new version of a symmetric key is not primary until UpdateCryptoKeyPrimaryVersion.
        return self._version_message(crypto_key, self._new_version(crypto_key))

    def _get_version(self, request: kms_v1.GetCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        return self._version_message(*self._version(request.name))

    def _list_versions(
        self, request: kms_v1.ListCryptoKeyVersionsRequest
    ) -> kms_v1.ListCryptoKeyVersionsResponse:
        crypto_key = self._key(request.parent)
        versions = [
            self._version_message(crypto_key, crypto_key.versions[n]) for n in sorted(crypto_key.versions)
        ]
        return kms_v1.ListCryptoKeyVersionsResponse(crypto_key_versions=versions, total_size=len(versions))

    def _update_version(self, request: kms_v1.UpdateCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        if list(request.update_mask.paths) != ["state"]:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "The KMS stand-in updates only the state field.")
        crypto_key, version = self._version(request.crypto_key_version.name)
        if request.crypto_key_version.state not in (State.ENABLED, State.DISABLED):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "state must be ENABLED or DISABLED.")
        version.state = request.crypto_key_version.state
        return self._version_message(crypto_key, version)

    def _update_primary(self, request: kms_v1.UpdateCryptoKeyPrimaryVersionRequest) -> kms_v1.CryptoKey:
        crypto_key = self._key(request.name)
        _, version = self._version(f"{request.name}/cryptoKeyVersions/{request.crypto_key_version_id}")
        if version.state != State.ENABLED:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"CryptoKeyVersion {version.number} is not enabled."
            )
        crypto_key.primary = version.number
        return self._key_message(crypto_key)

    # -- cryptography -------------------------------------------------------------------------------------

    @staticmethod
    def _check_crc(field_name: str, data: bytes, given: int | None) -> bool:
        if given is None:
            return False
        if given != _crc32c(data):
            message = f"The checksum in field {field_name} did not match the data in field {field_name[:-7]}."
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        return True

    def _encrypt(self, request: kms_v1.EncryptRequest) -> kms_v1.EncryptResponse:
        if _VERSION_RE.match(request.name):
            crypto_key, version = self._version(request.name)
        else:
            crypto_key = self._key(request.name)
            if crypto_key.primary is None:
                raise _Abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"CryptoKey {crypto_key.name} has no primary version.",
                )
            version = crypto_key.versions[crypto_key.primary]
        if (
            len(request.plaintext) > MAX_PLAINTEXT_BYTES
            or len(request.additional_authenticated_data) > MAX_AAD_BYTES
        ):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The plaintext or additional authenticated data is too large.",
            )
        verified_plaintext = self._check_crc("plaintext_crc32c", request.plaintext, request.plaintext_crc32c)
        verified_aad = self._check_crc(
            "additional_authenticated_data_crc32c", request.additional_authenticated_data,
            request.additional_authenticated_data_crc32c,
        )  # fmt: skip
        if version.state != State.ENABLED:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"CryptoKeyVersion {version.number} is not enabled."
            )
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(version.material).encrypt(
            nonce,
            request.plaintext,
            crypto_key.name.encode() + b"\x00" + request.additional_authenticated_data,
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

    def _decrypt(self, request: kms_v1.DecryptRequest) -> kms_v1.DecryptResponse:
        crypto_key = self._key(request.name)
        self._check_crc("ciphertext_crc32c", request.ciphertext, request.ciphertext_crc32c)
        self._check_crc(
            "additional_authenticated_data_crc32c", request.additional_authenticated_data,
            request.additional_authenticated_data_crc32c,
        )  # fmt: skip
        invalid = _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid.")
        ciphertext = request.ciphertext
        if len(ciphertext) < _HEADER.size + _NONCE_BYTES + 16:
            raise invalid
        form, number = _HEADER.unpack_from(ciphertext)
        version = crypto_key.versions.get(number)
        if form != _FORMAT or version is None:
            raise invalid
        if version.state != State.ENABLED:
            message = f"CryptoKeyVersion {crypto_key.name}/cryptoKeyVersions/{number} is not enabled."
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, message)
        nonce = ciphertext[_HEADER.size : _HEADER.size + _NONCE_BYTES]
        try:
            plaintext = AESGCM(version.material).decrypt(
                nonce, ciphertext[_HEADER.size + _NONCE_BYTES :],
                crypto_key.name.encode() + b"\x00" + request.additional_authenticated_data,
            )  # fmt: skip
        except InvalidTag:
            raise invalid from None
        return kms_v1.DecryptResponse(
            plaintext=plaintext,
            plaintext_crc32c=_crc32c(plaintext),
            used_primary=number == crypto_key.primary,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )


def start_kms_standin(port: int = 0, *, keys: tuple[str, ...] = ()) -> KmsStandin:
    """A stand-in serving on 127.0.0.1:`port` (0: any free port) from background threads, `keys` created."""
    standin = KmsStandin(port).start()
    for key in keys:
        standin.ensure_key(key)
    return standin


def main() -> None:
    """Serve the stand-in until SIGTERM or Ctrl-C (the local stack runs it as a child process)."""
    parser = argparse.ArgumentParser(description="Local Cloud KMS stand-in (no Cloud KMS emulator exists).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", action="append", default=[], help="CryptoKey name to create at start")
    args = parser.parse_args()
    standin = start_kms_standin(args.port, keys=tuple(args.key))
    print(f"KMS stand-in serving on {standin.endpoint}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    standin.stop()


if __name__ == "__main__":
    main()
