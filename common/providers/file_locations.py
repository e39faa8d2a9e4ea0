"""The read-only check of a file-based provider (aws, azure): list the location its files are read from.

Those providers' steps read billing files the platform itself can reach (source.files): a gs:// location
with the platform's own Cloud Storage access, or a local path inside the tenant's folder of a source root
(FILE_SOURCE_ROOTS). So the proof is what a run needs: the location can be listed by the platform, as a run
lists it. The tenant's provider key is not used by any step, and not by this check either.

- Listed: ACTIVE, with how many files were found (a folder still empty is ACTIVE too, saying runs need files).
- Not found, not the tenant's, access denied, not a supported location: INVALID.
- Cloud Storage unreachable, or no Google credentials to ask it with: UNVERIFIED.

A gs:// location is listed with one call (at most MAX_LISTED objects), never downloaded.
"""

from __future__ import annotations

from typing import Any

from common.errors import ConfigurationError, TerminalError, TransientError
from common.providers.base import Verification, VerificationRequest, proved, refused, unverified
from common.runtime import Runtime
from common.sources.files import list_location

MAX_LISTED = 1000  # one page of a Cloud Storage listing
_CLIENT_CACHE = "gcs_location_check_client"


def verify_file_location(request: VerificationRequest, setting: str) -> Verification:
    """List the location in setting `setting` of the integration the way a run would find its files."""
    location: str = getattr(request.settings, setting)
    rt = request.runtime
    try:
        if location.startswith("gs://"):
            found = _objects_under(rt, location, request.timeout)
        else:
            found = len(list_location(location, rt.settings, "auto", _no_cloud_storage, request.tenant_id))
    except (TransientError, ConfigurationError) as exc:
        return unverified(f"{setting} could not be listed: {exc.message}")
    except TerminalError as exc:
        if exc.code == "source_empty":
            return proved(
                f"{setting} {location} can be listed but holds no csv, ndjson or parquet files yet; runs fail"
                " until the export delivers some"
            )
        hint = ""
        if exc.code == "source_forbidden" and not location.startswith("gs://"):
            hint = f" (a tenant's files are read from its own folder {request.tenant_id}/ of a source root)"
        return refused(f"{setting}: {exc.message}{hint}")
    noun = "file" if found == 1 else "files"
    more = " or more" if found >= MAX_LISTED else ""
    return proved(f"{setting} {location} lists {found}{more} {noun} the platform can read")


def _no_cloud_storage() -> Any:
    raise AssertionError("a local location never needs Cloud Storage")


def _objects_under(rt: Runtime, location: str, timeout: float) -> int:
    """How many objects the gs:// location names (itself, or those under it as a folder): one listing."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exceptions

    from common.sources.gcs import parse_gcs_uri, translate

    bucket, path = parse_gcs_uri(location)
    client = _storage_client(rt)
    try:
        blobs = client.list_blobs(
            bucket, prefix=path or None, max_results=MAX_LISTED, timeout=timeout, retry=None
        )
        names = [blob.name for blob in blobs if not blob.name.endswith("/")]
    except (gexc.GoogleAPICallError, gexc.RetryError, requests.exceptions.RequestException,
            auth_exceptions.GoogleAuthError) as exc:  # fmt: skip
        raise translate(exc, location) from None
    folder = path.rstrip("/") + "/"
    found = [name for name in names if not path or name == path or name.startswith(folder)]
    if not found:
        raise TerminalError(f"no csv, ndjson or parquet files at {location}", code="source_empty")
    return len(found)


def _storage_client(rt: Runtime) -> Any:
    """The instance's Cloud Storage client for checks (the emulator's when configured), made once."""
    if _CLIENT_CACHE not in rt.caches:
        from common.sources.gcs import GcsReader

        rt.caches[_CLIENT_CACHE] = GcsReader.from_settings(rt.settings).client
    return rt.caches[_CLIENT_CACHE]
