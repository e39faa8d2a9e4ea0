"""Claims in Cloud Storage, on fake-gcs-server (generation preconditions honoured), a bucket per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.claims.base import Claims
from common.claims.gcs import GcsClaims, storage_client


def make_gcs_claims(request: pytest.FixtureRequest, tmp_path: Path):
    endpoint = request.getfixturevalue("claims_storage")
    bucket = request.getfixturevalue("claims_bucket")

    def make(**options) -> Claims:  # its own client: another instance
        return GcsClaims(storage_client("local-project", endpoint), bucket, **options)

    return make


CLAIMS_FACTORIES = {"gcs": make_gcs_claims}
