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

This module is the gRPC service: the server, the method table, the record of calls and the injected faults
(the test hooks), `start_kms_standin` and the command line. The key state and the key-management RPCs are
in kms_keys.py, Encrypt, Decrypt and the ciphertext format in kms_encryption.py; import from here.

Start it in-process with `start_kms_standin()`; `python -m convergence.emulators.kms_standin --port N` serves it
as a process for the local stack.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import kms_v1

from convergence.emulators.kms_encryption import MAX_AAD_BYTES, MAX_PLAINTEXT_BYTES, decrypt, encrypt
from convergence.emulators.kms_keys import Abort, Algorithm, KeyStore, Purpose, State, crypto_key_of
from convergence.emulators.process import wait_for_stop_signal

__all__ = [
    "HOST", "MAX_AAD_BYTES", "MAX_PLAINTEXT_BYTES", "SERVICE", "Algorithm", "Call", "KmsStandin", "Purpose",
    "State", "main", "start_kms_standin",
]  # fmt: skip

SERVICE = "google.cloud.kms.v1.KeyManagementService"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Call:
    """One RPC the stand-in answered (or refused): for tests that count KMS round trips."""

    method: str
    resource: str
    aad: bytes = b""


class KmsStandin:
    """An in-memory Cloud KMS behind a real gRPC server on 127.0.0.1."""

    def __init__(self, port: int = 0, *, workers: int = 8) -> None:
        self._lock = threading.Lock()  # guards the key store, the faults and the calls
        self._store = KeyStore()
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
                and (key is None or crypto_key_of(c.resource) == key)
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
            return self._store.rotate(key)

    def ensure_key(self, key: str) -> str:
        """Create the key ring and CryptoKey of `key` unless they exist (for the local stack)."""
        with self._lock:
            return self._store.ensure_key(key)

    # -- plumbing -----------------------------------------------------------------------------------------

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        store = self._store
        table: dict[str, tuple[Callable[[Any], Any], type, type, Callable[[Any], str]]] = {
            "CreateKeyRing": (store.create_key_ring, kms_v1.CreateKeyRingRequest, kms_v1.KeyRing,
                              lambda r: r.parent),
            "GetKeyRing": (store.get_key_ring, kms_v1.GetKeyRingRequest, kms_v1.KeyRing, lambda r: r.name),
            "CreateCryptoKey": (store.create_crypto_key, kms_v1.CreateCryptoKeyRequest, kms_v1.CryptoKey,
                                lambda r: f"{r.parent}/cryptoKeys/{r.crypto_key_id}"),
            "GetCryptoKey": (store.get_crypto_key, kms_v1.GetCryptoKeyRequest, kms_v1.CryptoKey,
                             lambda r: r.name),
            "CreateCryptoKeyVersion": (store.create_version, kms_v1.CreateCryptoKeyVersionRequest,
                                       kms_v1.CryptoKeyVersion, lambda r: r.parent),
            "GetCryptoKeyVersion": (store.get_version, kms_v1.GetCryptoKeyVersionRequest,
                                    kms_v1.CryptoKeyVersion, lambda r: r.name),
            "ListCryptoKeyVersions": (store.list_versions, kms_v1.ListCryptoKeyVersionsRequest,
                                      kms_v1.ListCryptoKeyVersionsResponse, lambda r: r.parent),
            "UpdateCryptoKeyVersion": (store.update_version, kms_v1.UpdateCryptoKeyVersionRequest,
                                       kms_v1.CryptoKeyVersion, lambda r: r.crypto_key_version.name),
            "UpdateCryptoKeyPrimaryVersion": (store.update_primary,
                                              kms_v1.UpdateCryptoKeyPrimaryVersionRequest, kms_v1.CryptoKey,
                                              lambda r: r.name),
            "Encrypt": (lambda r: encrypt(store, r), kms_v1.EncryptRequest, kms_v1.EncryptResponse,
                        lambda r: r.name),
            "Decrypt": (lambda r: decrypt(store, r), kms_v1.DecryptRequest, kms_v1.DecryptResponse,
                        lambda r: r.name),
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
                fault = self._take_fault(crypto_key_of(name))
            if fault is not None:
                context.abort(fault, f"injected by the KMS stand-in for {crypto_key_of(name)}")
            try:
                with self._lock:
                    return handler(request)
            except Abort as exc:
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
    wait_for_stop_signal()
    standin.stop()


if __name__ == "__main__":
    main()
