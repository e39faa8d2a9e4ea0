"""The gcp-kms keyring in the keyring contract suite.

No Cloud KMS emulator exists: the keyring here is the production GcpKmsKeyring, whose key-encryption key is
tink.integration.gcpkms on the official google-cloud-kms client, talking gRPC to the local stand-in
convergence/emulators/kms_standin.py on 127.0.0.1 (tests/plugins/kms_standin.py starts it). Tenant keysets are
stored in the control table tenant_keysets of a DuckDB warehouse through the Warehouse port.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from common.claims.local import LocalClaims
from common.crypto.gcp_kms import GcpKmsKeyring
from common.crypto.keyring import Keyring
from common.metadata.keysets import WarehouseKeysetStore
from common.warehouse.duckdb import DuckDBWarehouse
from tests.plugins.kms_standin import create_kms_key

CONTROL_DATASET = "organizations"


def make_kms_keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Keyring:
    standin = request.getfixturevalue("kms_standin")
    key_name = create_kms_key(request.getfixturevalue("kms_admin_client"))
    warehouse = DuckDBWarehouse(tmp_path / "kms-keysets.duckdb")
    warehouse.create_dataset(CONTROL_DATASET)
    keyring = GcpKmsKeyring(
        key_name, WarehouseKeysetStore(warehouse, CONTROL_DATASET, LocalClaims(tmp_path / "claims")), endpoint=standin.endpoint
    )
    request.addfinalizer(warehouse.close)
    request.addfinalizer(keyring.close)
    return keyring


KEYRING_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Keyring]] = {"gcp-kms": make_kms_keyring}
