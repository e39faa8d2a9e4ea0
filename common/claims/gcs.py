"""Claims in a Cloud Storage bucket: one small JSON object per key, changed only by conditional writes.

Creating the object with `if_generation_match=0` succeeds for exactly one writer (how Terraform's gcs
backend locks state); every later change names the generation it read, so a second writer gets 412
Precondition Failed. Cloud Storage is strongly consistent for these reads and writes. The client retries
transient errors of conditional writes itself (they are safe to repeat); a write applied whose answer was
lost is recognised by `Claims` from the record's nonce.

Cost: taking and freeing a key is two Class A operations (a third to complete it), plus a Class B read
when contended. Cloud Storage sustains about one write per second per object name and thousands per second
per bucket; keys are per tenant and object (a run, a pipeline, an upload table), so only a tenant hammering
one object comes near the first limit, and then Cloud Storage's 429 is retried by the client (safe: every
write is conditional), which slows that tenant and is never wrong. A lifecycle rule (Terraform,
claim_retention_days, a week) deletes claim objects; nothing relies on a key staying done longer.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as google_exceptions

from common.claims.base import ClaimRecord, Claims, Clock, utc_now
from common.errors import DependencyUnavailable

PREFIX = "claims/"


class GcsClaims(Claims):
    def __init__(self, client: Any, bucket: str, *, holder: str | None = None, now: Clock = utc_now) -> None:
        super().__init__(holder=holder, now=now)
        self._client = client
        self._bucket = client.bucket(bucket)
        self.bucket_name = bucket

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(PREFIX + key)

    def read(self, key: str) -> tuple[int, ClaimRecord] | None:
        blob = self._blob(key)
        try:
            payload = blob.download_as_bytes()
        except google_exceptions.NotFound:
            return None
        except google_exceptions.GoogleAPICallError as exc:
            raise _unavailable(exc) from None
        return int(blob.generation), ClaimRecord.model_validate_json(payload)

    def write(self, key: str, record: ClaimRecord, *, if_generation: int) -> int | None:
        blob = self._blob(key)
        try:
            blob.upload_from_string(
                record.model_dump_json(), content_type="application/json", if_generation_match=if_generation
            )
        except google_exceptions.PreconditionFailed:
            return None
        except google_exceptions.GoogleAPICallError as exc:
            raise _unavailable(exc) from None
        return int(blob.generation)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()


def _unavailable(exc: google_exceptions.GoogleAPICallError) -> DependencyUnavailable:
    return DependencyUnavailable(f"Cloud Storage claims unavailable: {exc.message}", code="claims_unavailable")


def storage_client(project: str, emulator_host: str | None) -> Any:
    """The official Storage client; against an emulator with anonymous credentials."""
    from google.cloud import storage

    if emulator_host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project, credentials=AnonymousCredentials(),
                              client_options=ClientOptions(api_endpoint=emulator_host))  # fmt: skip
    return storage.Client(project=project)
