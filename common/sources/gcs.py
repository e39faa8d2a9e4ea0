"""Cloud Storage side of file sources: list the objects a gs:// location names and fetch their bytes.

The official google-cloud-storage client is used in every mode. With STORAGE_EMULATOR_HOST set the client
talks to that endpoint (gcp-storage-emulator locally) with anonymous credentials; otherwise it uses the
function's own credentials. A missing bucket or object is terminal; a network failure or a 5xx/429 is
transient, so Pub/Sub redelivers the step.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from common.errors import ConfigurationError, ConvergenceError, TerminalError, TransientError
from common.settings import Settings

# Bucket names: 3-63 characters per dot-separated part, lower-case letters, digits, -, _ and dots.
GCS_URI_RE = re.compile(r"^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(.*))?$", re.DOTALL)
_TRANSIENT = (
    gexc.ServerError,
    gexc.TooManyRequests,
    gexc.RetryError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    auth_exceptions.TransportError,
)


@dataclass(frozen=True)
class GcsObject:
    """One object of a bucket, and the gs:// URI that names it."""

    bucket: str
    name: str

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """(bucket, object path or prefix) of a gs:// URI; a malformed one is terminal."""
    match = GCS_URI_RE.fullmatch(uri)
    if not match or any(ord(ch) < 32 for ch in uri):
        raise TerminalError(f"{uri!r} is not a valid gs://bucket/path URI", code="invalid_location")
    return match.group(1), match.group(2) or ""


def translate(exc: BaseException, what: str) -> ConvergenceError:
    """A Cloud Storage failure as the platform's error: transient for the network and 5xx, else terminal."""
    text = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
    if isinstance(exc, _TRANSIENT):
        return TransientError(f"Cloud Storage unavailable while reading {what}: {text}")
    if isinstance(exc, gexc.NotFound):
        return TerminalError(f"{what} does not exist", code="source_not_found")
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        return TerminalError(f"access to {what} is denied", code="source_forbidden")
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return TerminalError(f"no usable credentials to read {what}", code="source_forbidden")
    return TerminalError(f"Cloud Storage refused to read {what}: {text}", code="source_unreadable")


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except (gexc.GoogleAPICallError, gexc.RetryError, requests.exceptions.RequestException,
            auth_exceptions.GoogleAuthError) as exc:  # fmt: skip
        raise translate(exc, what) from None


class GcsReader:
    """Lists and downloads objects through one google.cloud.storage.Client, with bounded retries."""

    def __init__(self, client: Any, *, deadline: float = 60.0) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        self.client = client
        self._retry = DEFAULT_RETRY.with_timeout(deadline)
        self._deadline = deadline

    @classmethod
    def from_settings(cls, settings: Settings, *, deadline: float = 60.0) -> GcsReader:
        """A reader for the deployment: the emulator with anonymous credentials when one is configured."""
        from google.cloud import storage

        if settings.storage_emulator_host:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            client = storage.Client(
                project=settings.gcp_project_id,
                credentials=AnonymousCredentials(),
                client_options=ClientOptions(api_endpoint=settings.storage_emulator_host),
            )
        else:
            try:
                client = storage.Client(project=settings.gcp_project_id)
            except auth_exceptions.DefaultCredentialsError:
                raise ConfigurationError(
                    "no Google credentials to read gs:// sources (or set STORAGE_EMULATOR_HOST)"
                ) from None
        return cls(client, deadline=deadline)

    def list(self, uri: str) -> list[GcsObject]:
        """The object a URI names, or else every object under it taken as a folder, sorted by name."""
        bucket, path = parse_gcs_uri(uri)
        with _storage_errors(uri):
            if path and not path.endswith("/"):
                blob = self.client.bucket(bucket).get_blob(path, retry=self._retry, timeout=self._deadline)
                if blob is not None:
                    return [GcsObject(bucket, blob.name)]
                path += "/"
            blobs = self.client.list_blobs(
                bucket, prefix=path or None, retry=self._retry, timeout=self._deadline
            )
            names = [blob.name for blob in blobs if not blob.name.endswith("/")]
        return [GcsObject(bucket, name) for name in sorted(names)]

    def read(self, item: GcsObject) -> bytes:
        """The object's bytes (a gzip Content-Encoding may already be undone by the client)."""
        with _storage_errors(item.uri):
            blob = self.client.bucket(item.bucket).blob(item.name)
            return blob.download_as_bytes(retry=self._retry, timeout=self._deadline)
