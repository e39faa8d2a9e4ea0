"""The Cloud KMS stand-in for every suite. No Cloud KMS emulator exists, so keyring tests run the official
google-cloud-kms client against convergence/emulators/kms_standin.py, a gRPC server on 127.0.0.1 in this process.

Starting it can fail the session (an error), never skip it. Imports are deferred to the fixtures, so a run
that needs no KMS does not pay for loading the KMS client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from google.cloud import kms_v1

    from convergence.emulators.kms_standin import KmsStandin

KMS_LOCATION = "projects/convergence-test/locations/global"


@pytest.fixture(scope="session")
def kms_standin() -> Iterator[KmsStandin]:
    """The running stand-in; `.endpoint` is its host:port, `.count(...)` counts the RPCs it answered."""
    from convergence.emulators.kms_standin import start_kms_standin

    standin = start_kms_standin()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="session")
def kms_endpoint(kms_standin: KmsStandin) -> str:
    return kms_standin.endpoint


@pytest.fixture(scope="session")
def kms_admin_client(kms_standin: KmsStandin) -> Iterator[kms_v1.KeyManagementServiceClient]:
    """The official client pointed at the stand-in: sets keys up and rotates them as an operator would."""
    from common.crypto.gcp_kms import build_kms_client

    client = build_kms_client(kms_standin.endpoint, retry_deadline=2.0)
    yield client
    client.transport.close()


def create_kms_key(client: kms_v1.KeyManagementServiceClient, prefix: str = "convergence") -> str:
    """A new key ring and ENCRYPT_DECRYPT CryptoKey (primary version 1), made through the official client."""
    from google.cloud import kms_v1

    ring = client.create_key_ring(
        request={"parent": KMS_LOCATION, "key_ring_id": f"{prefix}-{uuid.uuid4().hex[:12]}", "key_ring": {}}
    )
    key = client.create_crypto_key(
        request={
            "parent": ring.name,
            "crypto_key_id": "tenant-keysets",
            "crypto_key": {"purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT},
        }
    )
    return key.name


@pytest.fixture
def kms_key_name(kms_admin_client: kms_v1.KeyManagementServiceClient) -> str:
    """A fresh CryptoKey per test, so counts and rotations of one test never touch another's."""
    return create_kms_key(kms_admin_client)
