"""The gcp-kms keyring: tenant keysets (common.crypto.tenant_keys) wrapped by a Cloud KMS key through Tink.

The key-encryption key is `tink.integration.gcpkms` on the official google-cloud-kms client, built once per
instance on first use. The client gets a bounded retry (a function must not hang for the client's default 60 s
during an outage; Pub/Sub redelivers instead) and the end-to-end CRC32C checks Cloud KMS recommends on Encrypt
and Decrypt. KMS errors become Convergence errors: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
(quota), INTERNAL, ABORTED, DATA_LOSS → DependencyUnavailable (transient); a wrapped keyset KMS refuses to
decrypt → DecryptionFailed; NOT_FOUND, PERMISSION_DENIED, a disabled key version → ConfigurationError naming
KMS_KEY_NAME.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import google_crc32c
import grpc
import tink
from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.auth import exceptions as auth_exceptions
from google.cloud import kms_v1
from google.cloud.kms_v1.services.key_management_service.transports import KeyManagementServiceGrpcTransport
from tink.integration import gcpkms

from common.crypto.keyring import DecryptionFailed
from common.crypto.tenant_keys import KeyEncryptionKey, TenantKeysetKeyring, Wrapped
from common.errors import ConfigurationError, ConvergenceError, DependencyUnavailable

if TYPE_CHECKING:
    from common.crypto.keyset_store import KeysetStore

CRYPTO_KEY_RE = re.compile(r"^projects/[^/]+/locations/[a-zA-Z0-9_-]{1,63}/keyRings/[a-zA-Z0-9_-]{1,63}"
                           r"/cryptoKeys/[a-zA-Z0-9_-]{1,63}$")  # fmt: skip
GCP_KEY_URI_PREFIX = "gcp-kms://"  # Tink's scheme for Cloud KMS key URIs
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
_TRANSIENT_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS,
})  # fmt: skip


def _crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def _flattened(kwargs: dict[str, Any], *fields: str) -> dict[str, Any]:
    """Pop the client's flattened request fields (e.g. `name=`) out of `kwargs`, to build the request with."""
    return {field: kwargs.pop(field) for field in fields if kwargs.get(field) is not None}


class _CheckedKmsClient(kms_v1.KeyManagementServiceClient):
    """The official client with a bounded retry, CRC32C integrity checks, and the version each Encrypt used.

    Tink calls `encrypt(request={...})` and `decrypt(request={...})` and keeps only the bytes; this subclass
    adds what Tink leaves out. The version name is kept per thread, read right after the call that made it.
    """

    def __init__(self, *, retry: api_retry.Retry, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retry = retry
        self._timeout = timeout
        self._last_version = threading.local()

    def encrypt(self, request: Any = None, **kwargs: Any) -> kms_v1.EncryptResponse:
        request = kms_v1.EncryptRequest(request, **_flattened(kwargs, "name", "plaintext"))
        request.plaintext_crc32c = _crc32c(request.plaintext)
        request.additional_authenticated_data_crc32c = _crc32c(request.additional_authenticated_data)
        kwargs.setdefault("retry", self._retry)
        kwargs.setdefault("timeout", self._timeout)
        response = super().encrypt(request=request, **kwargs)
        if (
            not response.verified_plaintext_crc32c
            or not response.verified_additional_authenticated_data_crc32c
            or response.ciphertext_crc32c != _crc32c(response.ciphertext)
        ):
            raise api_exceptions.DataLoss("the Cloud KMS Encrypt response failed its CRC32C integrity check")
        self._last_version.name = response.name
        return response

    def decrypt(self, request: Any = None, **kwargs: Any) -> kms_v1.DecryptResponse:
        request = kms_v1.DecryptRequest(request, **_flattened(kwargs, "name", "ciphertext"))
        request.ciphertext_crc32c = _crc32c(request.ciphertext)
        request.additional_authenticated_data_crc32c = _crc32c(request.additional_authenticated_data)
        kwargs.setdefault("retry", self._retry)
        kwargs.setdefault("timeout", self._timeout)
        response = super().decrypt(request=request, **kwargs)
        if response.plaintext_crc32c != _crc32c(response.plaintext):
            raise api_exceptions.DataLoss("the Cloud KMS Decrypt response failed its CRC32C integrity check")
        return response

    def get_crypto_key(self, request: Any = None, **kwargs: Any) -> kms_v1.CryptoKey:
        kwargs.setdefault("retry", self._retry)
        kwargs.setdefault("timeout", self._timeout)
        return super().get_crypto_key(request=request, **kwargs)

    def take_last_version(self) -> str | None:
        """The CryptoKeyVersion of this thread's last Encrypt, once."""
        name = getattr(self._last_version, "name", None)
        self._last_version.name = None
        return name or None


def build_kms_client(
    endpoint: str | None = None,
    *,
    retry_deadline: float = 10.0,
    timeout: float = 5.0,
    credentials: Any = None,
) -> kms_v1.KeyManagementServiceClient:
    """The official Cloud KMS client: Google's endpoint with default credentials, or a loopback stand-in.

    `endpoint` (host:port) is for the local stand-in only (convergence/emulators/kms_standin.py), reached over an
    insecure gRPC channel, so anything but a loopback address is refused.
    """
    retry = api_retry.Retry(
        initial=0.1, maximum=2.0, multiplier=2.0, timeout=retry_deadline,
        predicate=api_retry.if_exception_type(
            api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded
        ),
    )  # fmt: skip
    if endpoint is None:
        return _CheckedKmsClient(retry=retry, timeout=timeout, credentials=credentials)
    host = endpoint.rsplit(":", 1)[0]
    if host not in LOOPBACK_HOSTS:
        raise ConfigurationError(
            f"KMS endpoint {endpoint}: an insecure KMS endpoint must be a loopback address"
        )
    transport = KeyManagementServiceGrpcTransport(channel=grpc.insecure_channel(endpoint))
    return _CheckedKmsClient(retry=retry, timeout=timeout, transport=transport)


def _google_error(exc: BaseException) -> api_exceptions.GoogleAPIError | None:
    """The Google API error behind `exc` (Tink wraps it in a TinkError)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, api_exceptions.GoogleAPIError):
            return current
        pending.extend(a for a in current.args if isinstance(a, BaseException))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


def kms_failure(exc: BaseException, key_name: str, *, decrypting: bool) -> ConvergenceError:
    """The Convergence error for a failed Cloud KMS call: transient, refused ciphertext, or configuration."""
    error = _google_error(exc)
    if error is None:
        if decrypting:
            return DecryptionFailed("Cloud KMS could not unwrap a tenant keyset")
        return ConfigurationError(f"KMS_KEY_NAME: Cloud KMS key {key_name} cannot be used: {exc}")
    code = getattr(error, "grpc_status_code", None)
    if isinstance(error, api_exceptions.RetryError) or code in _TRANSIENT_CODES:
        return DependencyUnavailable(
            f"Cloud KMS is unavailable for {key_name}: {error}", code="kms_unavailable"
        )
    if decrypting and isinstance(error, api_exceptions.InvalidArgument):
        return DecryptionFailed(
            "Cloud KMS refused a wrapped tenant keyset: altered, or bound to another tenant"
        )
    return ConfigurationError(f"KMS_KEY_NAME: Cloud KMS refused key {key_name}: {error.message}")


class CloudKmsKek(KeyEncryptionKey):
    """A Cloud KMS CryptoKey as key-encryption key, through tink.integration.gcpkms."""

    def __init__(
        self, key_name: str, *, client: kms_v1.KeyManagementServiceClient | None = None,
        client_factory: Callable[[], kms_v1.KeyManagementServiceClient] = build_kms_client,
    ) -> None:  # fmt: skip
        if not CRYPTO_KEY_RE.match(key_name or ""):
            raise ConfigurationError(
                "KMS_KEY_NAME: must look like projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        self.key_name = key_name
        self._client = client
        self._owns_client = client is None
        self._client_factory = client_factory
        self._aead: tink.aead.Aead | None = None
        self._lock = threading.Lock()

    def _kms(self) -> tuple[kms_v1.KeyManagementServiceClient, tink.aead.Aead]:
        """The client and Tink's KMS AEAD, built on first use (a cold start needing no key pays nothing)."""
        if self._aead is None:
            with self._lock:
                if self._aead is None:
                    try:
                        client = self._client or self._client_factory()
                    except auth_exceptions.GoogleAuthError as exc:
                        raise ConfigurationError(
                            f"KMS_KEY_NAME: no Google credentials for Cloud KMS: {exc}"
                        ) from None
                    uri = GCP_KEY_URI_PREFIX + self.key_name
                    self._client = client
                    self._aead = gcpkms.new_client(kms_v1_client=client, key_uri=uri).get_aead(uri)
        assert self._client is not None
        return self._client, self._aead

    def wrap(self, plaintext: bytes, associated_data: bytes) -> Wrapped:
        client, kms_aead = self._kms()
        try:
            ciphertext = kms_aead.encrypt(plaintext, associated_data)
        except tink.TinkError as exc:
            raise kms_failure(exc, self.key_name, decrypting=False) from None
        version = client.take_last_version() if isinstance(client, _CheckedKmsClient) else None
        return Wrapped(ciphertext, version)

    def unwrap(self, ciphertext: bytes, associated_data: bytes) -> bytes:
        _, kms_aead = self._kms()
        try:
            return kms_aead.decrypt(ciphertext, associated_data)
        except tink.TinkError as exc:
            raise kms_failure(exc, self.key_name, decrypting=True) from None

    def primary_version(self) -> str | None:
        client, _ = self._kms()
        try:
            return client.get_crypto_key(name=self.key_name).primary.name or None
        except api_exceptions.GoogleAPIError as exc:
            raise kms_failure(exc, self.key_name, decrypting=False) from None

    def close(self) -> None:
        with self._lock:
            if self._owns_client and self._client is not None:
                self._client.transport.close()
                self._client = None
            self._aead = None


class GcpKmsKeyring(TenantKeysetKeyring):
    """Per-tenant Tink keysets wrapped by Cloud KMS; at most one KMS call per cached tenant per instance."""

    name = "gcp-kms"

    def __init__(
        self, key_name: str, store: KeysetStore, *, endpoint: str | None = None,
        client: kms_v1.KeyManagementServiceClient | None = None, cache_size: int = 1024,
        cache_ttl_seconds: float | None = None, retry_deadline: float = 10.0, timeout: float = 5.0,
    ) -> None:  # fmt: skip
        factory = partial(build_kms_client, endpoint, retry_deadline=retry_deadline, timeout=timeout)
        kek = CloudKmsKek(key_name, client=client, client_factory=factory)
        super().__init__(kek, store, cache_size=cache_size, cache_ttl_seconds=cache_ttl_seconds)
