"""The gcp-kms keyring: tenant keysets wrapped by Cloud KMS, cached per instance, rotated by `keys rewrap`.

No Cloud KMS emulator exists: every test here runs the official google-cloud-kms client (through
tink.integration.gcpkms) against the local stand-in convergence/emulators/kms_standin.py, and counts KMS calls
there.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading

import grpc
import pytest
import tink
import typer
from google.api_core.exceptions import InvalidArgument
from google.cloud import kms_v1
from tink import aead
from tink.proto import tink_pb2
from typer.testing import CliRunner

from common.claims.local import LocalClaims
from common.contracts.integrations import IntegrationSetupRequest
from common.crypto.api_keys import KEY_PURPOSE, hash_api_key
from common.crypto.gcp_kms import CloudKmsKek, GcpKmsKeyring, build_kms_client
from common.crypto.keyring import DecryptionFailed, associated_data
from common.crypto.keyset_store import InMemoryKeysetStore
from common.crypto.local import LocalKeyring
from common.crypto.tenant_keys import (
    CURRENT,
    KEYSET_PURPOSE,
    AeadKek,
    TenantKeysetKeyring,
    ciphertext_key_id,
)
from common.errors import ConfigurationError, DependencyUnavailable
from common.metadata.integrations import read_credential
from common.metadata.keysets import WarehouseKeysetStore
from common.runtime import Runtime
from common.services import integrations, key_rotation
from common.services.key_rotation import NotRotatable, rewrap_all
from common.warehouse.duckdb import DuckDBWarehouse
from convergence.cli.keys import keys_app
from convergence.emulators.kms_standin import KmsStandin, start_kms_standin
from convergence.emulators.process import free_port

SECRET = b'{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIE..."}'
KMS_METHODS = ("Encrypt", "Decrypt")


def kms_calls(standin: KmsStandin, key: str, tenant: str | None = None) -> int:
    """Encrypt and Decrypt calls on `key`, optionally only those wrapping or unwrapping `tenant`'s keyset."""
    aad = associated_data(tenant, KEYSET_PURPOSE) if tenant else None
    return sum(standin.count(method, key=key, aad=aad) for method in KMS_METHODS)


def make_keyring(standin: KmsStandin, key: str, store=None, **options) -> GcpKmsKeyring:
    """A keyring as one function instance holds it: its own client and cache, over a shared store."""
    options.setdefault("retry_deadline", 0.5)
    store = store if store is not None else InMemoryKeysetStore()
    return GcpKmsKeyring(key, store, endpoint=standin.endpoint, **options)


def rotate_kms_key(client: kms_v1.KeyManagementServiceClient, key: str) -> str:
    """What a 90-day rotation schedule does: a new version, made primary. Through the official client."""
    version = client.create_crypto_key_version(request={"parent": key, "crypto_key_version": {}})
    number = version.name.rsplit("/", 1)[1]
    client.update_crypto_key_primary_version(request={"name": key, "crypto_key_version_id": number})
    return version.name


# -- one KMS call per tenant per instance -----------------------------------------------------------------


def test_each_tenant_costs_one_kms_call_per_instance(kms_standin, kms_key_name):
    store = InMemoryKeysetStore()
    first = make_keyring(kms_standin, kms_key_name, store)
    made = {
        t: [first.encrypt(t, "api_key", SECRET + t.encode()) for _ in range(5)] for t in ("acme", "globex")
    }
    for tenant, ciphertexts in made.items():
        assert all(first.decrypt(tenant, "api_key", c) == SECRET + tenant.encode() for c in ciphertexts)
        assert kms_calls(kms_standin, kms_key_name, tenant) == 1  # the wrap of its new keyset
    assert kms_standin.count("Encrypt", key=kms_key_name) == 2
    assert kms_standin.count("Decrypt", key=kms_key_name) == 0

    second = make_keyring(kms_standin, kms_key_name, store)  # another function instance
    for _ in range(10):
        assert second.decrypt("acme", "api_key", made["acme"][0]) == SECRET + b"acme"
        second.encrypt("acme", "integration:gcp", SECRET)
    assert kms_standin.count("Decrypt", key=kms_key_name, aad=associated_data("acme", KEYSET_PURPOSE)) == 1
    assert kms_calls(kms_standin, kms_key_name, "globex") == 1


def test_concurrent_first_uses_of_a_tenant_make_one_kms_call(kms_standin, kms_key_name):
    store = InMemoryKeysetStore()
    ciphertext = make_keyring(kms_standin, kms_key_name, store).encrypt("acme", "api_key", SECRET)
    keyring = make_keyring(kms_standin, kms_key_name, store)
    results: list[bytes] = []
    barrier = threading.Barrier(16)

    def use() -> None:
        barrier.wait()
        results.append(keyring.decrypt("acme", "api_key", ciphertext))

    threads = [threading.Thread(target=use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [SECRET] * 16
    assert kms_standin.count("Decrypt", key=kms_key_name) == 1


def test_the_cache_is_bounded_and_evicts_the_least_recently_used_tenant(kms_standin, kms_key_name):
    store = InMemoryKeysetStore()
    creator = make_keyring(kms_standin, kms_key_name, store)
    made = {t: creator.encrypt(t, "api_key", t.encode()) for t in ("acme", "globex", "initech")}
    keyring = make_keyring(kms_standin, kms_key_name, store, cache_size=2)

    def unwraps(tenant: str) -> int:
        return kms_standin.count("Decrypt", key=kms_key_name, aad=associated_data(tenant, KEYSET_PURPOSE))

    for tenant in ("acme", "globex", "initech"):  # initech evicts acme
        assert keyring.decrypt(tenant, "api_key", made[tenant]) == tenant.encode()
    assert [unwraps(t) for t in ("acme", "globex", "initech")] == [1, 1, 1]
    assert keyring.decrypt("acme", "api_key", made["acme"]) == b"acme"  # reloaded; evicts globex
    assert keyring.decrypt("initech", "api_key", made["initech"]) == b"initech"  # still cached
    assert [unwraps(t) for t in ("acme", "globex", "initech")] == [2, 1, 1]


# -- tenant binding ---------------------------------------------------------------------------------------


def test_a_ciphertext_of_tenant_a_is_refused_for_tenant_b(kms_standin, kms_key_name):
    keyring = make_keyring(kms_standin, kms_key_name)
    mine = keyring.encrypt("acme", "integration:gcp", SECRET)
    keyring.encrypt("globex", "integration:gcp", b"globex has a keyset too")
    for tenant in ("globex", "umbrella"):  # with and without a keyset of its own
        with pytest.raises(DecryptionFailed) as caught:
            keyring.decrypt(tenant, "integration:gcp", mine)
        assert "PRIVATE KEY" not in str(caught.value)
    with pytest.raises(DecryptionFailed):
        keyring.decrypt("acme", "integration:aws", mine)
    assert keyring.decrypt("acme", "integration:gcp", mine) == SECRET


def test_a_wrapped_keyset_copied_into_another_tenants_row_does_not_unwrap(kms_standin, kms_key_name):
    store = InMemoryKeysetStore()
    keyring = make_keyring(kms_standin, kms_key_name, store)
    acme_secret = keyring.encrypt("acme", "api_key", SECRET)
    keyring.encrypt("globex", "api_key", b"x")
    acme, globex = store.get("acme"), store.get("globex")
    forged = dataclasses.replace(globex, wrapped_keyset=acme.wrapped_keyset, revision=globex.revision + 1)
    assert store.replace(globex, forged)
    with pytest.raises(DecryptionFailed, match="Cloud KMS refused"):  # its AAD names acme, not globex
        make_keyring(kms_standin, kms_key_name, store).decrypt("globex", "api_key", acme_secret)


# -- Cloud KMS key rotation -------------------------------------------------------------------------------


def test_after_kms_rotation_old_keysets_unwrap_and_new_wraps_use_the_new_primary(
    kms_standin, kms_key_name, kms_admin_client
):
    store = InMemoryKeysetStore()
    before = make_keyring(kms_standin, kms_key_name, store)
    old = before.encrypt("acme", "api_key", SECRET)
    assert store.get("acme").kek_version == f"{kms_key_name}/cryptoKeyVersions/1"

    v2 = rotate_kms_key(kms_admin_client, kms_key_name)
    after = make_keyring(kms_standin, kms_key_name, store)
    assert after.decrypt("acme", "api_key", old) == SECRET  # keyset wrapped by version 1 still unwraps
    after.encrypt("globex", "api_key", SECRET)
    assert store.get("globex").kek_version == v2
    assert after.kek.primary_version() == v2


def test_a_disabled_kms_version_is_a_configuration_error(kms_standin, kms_key_name, kms_admin_client):
    store = InMemoryKeysetStore()
    ciphertext = make_keyring(kms_standin, kms_key_name, store).encrypt("acme", "api_key", SECRET)
    assert kms_standin.rotate(kms_key_name).endswith("/cryptoKeyVersions/2")  # the stand-in's test hook
    kms_admin_client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": f"{kms_key_name}/cryptoKeyVersions/1",
                                   "state": kms_v1.CryptoKeyVersion.CryptoKeyVersionState.DISABLED},
            "update_mask": {"paths": ["state"]},
        }
    )  # fmt: skip
    with pytest.raises(ConfigurationError, match="KMS_KEY_NAME"):
        make_keyring(kms_standin, kms_key_name, store).decrypt("acme", "api_key", ciphertext)


# -- failures ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_a_kms_outage_is_dependency_unavailable(kms_standin, kms_key_name, code):
    store = InMemoryKeysetStore()
    ciphertext = make_keyring(kms_standin, kms_key_name, store).encrypt("acme", "api_key", SECRET)
    keyring = make_keyring(kms_standin, kms_key_name, store, retry_deadline=0.3)
    kms_standin.fail(kms_key_name, code)
    try:
        for call in (lambda: keyring.decrypt("acme", "api_key", ciphertext),
                     lambda: keyring.encrypt("globex", "api_key", SECRET)):  # fmt: skip
            with pytest.raises(DependencyUnavailable) as caught:
                call()
            assert caught.value.retryable and caught.value.status == 503
    finally:
        kms_standin.heal(kms_key_name)
    assert keyring.decrypt("acme", "api_key", ciphertext) == SECRET  # recovers once KMS answers


def test_an_unreachable_kms_is_dependency_unavailable(kms_key_name):
    keyring = GcpKmsKeyring(kms_key_name, InMemoryKeysetStore(), endpoint=f"127.0.0.1:{free_port()}",
                            retry_deadline=0.3, timeout=0.2)  # fmt: skip
    with pytest.raises(DependencyUnavailable):
        keyring.encrypt("acme", "api_key", SECRET)
    keyring.close()


def test_bad_ciphertexts_are_decryption_failed_without_kms_calls(kms_standin, kms_key_name):
    keyring = make_keyring(kms_standin, kms_key_name)
    good = keyring.encrypt("acme", "api_key", SECRET)
    calls = kms_calls(kms_standin, kms_key_name)
    unknown_key = good[:1] + bytes(b ^ 0xFF for b in good[1:5]) + good[5:]
    for bad in (b"", b"\x01", b"garbage" * 10, good[:-1], unknown_key, good[:5] + b"\x00" * 40):
        with pytest.raises(DecryptionFailed) as caught:
            keyring.decrypt("acme", "api_key", bad)
        assert caught.value.code == "decryption_failed"
    assert kms_calls(kms_standin, kms_key_name) == calls


def test_a_corrupt_wrapped_keyset_is_decryption_failed(kms_standin, kms_key_name):
    store = InMemoryKeysetStore()
    ciphertext = make_keyring(kms_standin, kms_key_name, store).encrypt("acme", "api_key", SECRET)
    record = store.get("acme")
    wrapped = tink_pb2.EncryptedKeyset.FromString(base64.b64decode(record.wrapped_keyset))
    sealed = bytearray(wrapped.encrypted_keyset)
    sealed[len(sealed) // 2] ^= 0x01  # inside the KMS ciphertext, past its header
    wrapped.encrypted_keyset = bytes(sealed)
    altered = base64.b64encode(wrapped.SerializeToString()).decode()
    assert store.replace(
        record, dataclasses.replace(record, wrapped_keyset=altered, revision=record.revision + 1)
    )
    with pytest.raises(DecryptionFailed):
        make_keyring(kms_standin, kms_key_name, store).decrypt("acme", "api_key", ciphertext)


def test_an_unknown_kms_key_is_a_configuration_error(kms_standin):
    keyring = make_keyring(kms_standin, "projects/p/locations/global/keyRings/none/cryptoKeys/missing")
    with pytest.raises(ConfigurationError, match="KMS_KEY_NAME"):
        keyring.encrypt("acme", "api_key", SECRET)


@pytest.mark.parametrize(
    "name", ["", "projects/p", "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"]
)
def test_kms_key_name_must_name_a_crypto_key(name):
    with pytest.raises(ConfigurationError, match="KMS_KEY_NAME"):
        CloudKmsKek(name)


def test_the_stand_in_serves_only_on_loopback_and_insecure_endpoints_must_be_loopback():
    standin = start_kms_standin()
    try:
        assert standin.endpoint.startswith("127.0.0.1:")
    finally:
        standin.stop()
    with pytest.raises(ConfigurationError, match="loopback"):
        build_kms_client("kms.example.com:443")


# -- `convergence keys rewrap` ----------------------------------------------------------------------------


@pytest.fixture
def kms_runtime(runtime: Runtime, kms_standin, kms_key_name) -> Runtime:
    """The embedded runtime with the gcp-kms keyring: keysets in its DuckDB control dataset, KMS stand-in."""
    runtime.keyring = make_keyring(
        kms_standin, kms_key_name, WarehouseKeysetStore(runtime.warehouse, runtime.settings.control_dataset, runtime.claims)
    )
    return runtime


@pytest.fixture
def two_tenants_with_secrets(kms_runtime, onboard_org) -> dict[str, str]:
    """acme and globex onboarded (API keys issued) with credentials of two providers each; their API keys."""
    keys = {org: onboard_org(org) for org in ("acme", "globex")}
    for org in keys:
        for provider, request in setup_requests(org).items():
            integrations.setup_integration(kms_runtime, org, provider, request)
    return keys


def deepseek_key(org: str) -> str:
    return f"sk-{org}Secret0123456789abcdefgh"


def setup_requests(org: str) -> dict[str, IntegrationSetupRequest]:
    """Two providers' credentials of one tenant, in their providers' formats."""
    return {
        "deepseek": IntegrationSetupRequest(credential=deepseek_key(org)),
        "aws": IntegrationSetupRequest(
            credential=f"arn:aws:iam::123456789012:role/{org}-cur-reader", settings={"cur_location": "/srv/cur"}
        ),
    }


def stored_ciphertexts(rt: Runtime) -> list[tuple[str, str, bytes]]:
    """(tenant, purpose, ciphertext) of every stored secret."""
    creds = rt.warehouse.query(
        "SELECT org_slug, provider, encrypted_credential FROM organizations.org_integration_credentials"
    )
    keys = rt.warehouse.query("SELECT org_slug, encrypted_key FROM organizations.org_api_keys")
    return [
        (r["org_slug"], f"integration:{r['provider']}", base64.b64decode(r["encrypted_credential"]))
        for r in creds
    ] + [(r["org_slug"], KEY_PURPOSE, base64.b64decode(r["encrypted_key"])) for r in keys]


def assert_all_under_primary_and_readable(rt: Runtime, standin: KmsStandin, keys: dict[str, str]) -> None:
    """Every stored secret is under its tenant's primary key and decrypts in a fresh instance."""
    fresh = make_keyring(standin, rt.keyring.kek.key_name, rt.keyring.store)
    for tenant, purpose, ciphertext in stored_ciphertexts(rt):
        assert ciphertext_key_id(ciphertext) == rt.keyring.store.get(tenant).primary_key_id
        plaintext = fresh.decrypt(tenant, purpose, ciphertext)
        if purpose == KEY_PURPOSE:
            assert plaintext.decode().startswith(f"{tenant}_api_")
    for org, key in keys.items():
        rows = rt.warehouse.query(
            "SELECT encrypted_key FROM organizations.org_api_keys WHERE key_hash = @h",
            {"h": hash_api_key(key)},
        )
        assert fresh.decrypt(org, KEY_PURPOSE, base64.b64decode(rows[0]["encrypted_key"])).decode() == key
        assert read_credential(rt, org, "deepseek") == deepseek_key(org)


def test_rewrap_reencrypts_everything_under_the_new_primary(
    kms_runtime, two_tenants_with_secrets, kms_admin_client, kms_standin
):
    rt = kms_runtime
    before = stored_ciphertexts(rt)
    assert len(before) == 6
    v2 = rotate_kms_key(kms_admin_client, rt.keyring.kek.key_name)

    report = rewrap_all(rt)

    assert report["rotation_id"] == v2 and report["kek_primary_version"] == v2
    assert report["tenants"] == 2 and report["keysets_rotated"] == 2
    assert report["credentials_reencrypted"] == 4 and report["api_keys_reencrypted"] == 2
    assert report["failed"] == [] and report["changed_meanwhile"] == 0
    for tenant in ("acme", "globex"):
        record = rt.keyring.store.get(tenant)
        assert (record.kek_version, record.rotation_id, record.rotation_state, record.key_count) == (
            v2,
            v2,
            CURRENT,
            2,
        )
    assert_all_under_primary_and_readable(rt, kms_standin, two_tenants_with_secrets)
    for tenant, purpose, old in before:  # ciphertexts of the old data key still decrypt: the key is kept
        rt.keyring.decrypt(tenant, purpose, old)


def test_rewrap_twice_changes_nothing_the_second_time(
    kms_runtime, two_tenants_with_secrets, kms_admin_client
):
    rotate_kms_key(kms_admin_client, kms_runtime.keyring.kek.key_name)
    rewrap_all(kms_runtime)
    after_first = stored_ciphertexts(kms_runtime)
    report = rewrap_all(kms_runtime)
    assert (report["keysets_rotated"], report["keysets_current"]) == (0, 2)
    assert (report["credentials_reencrypted"], report["api_keys_reencrypted"], report["already_current"]) == (
        0,
        0,
        6,
    )
    assert stored_ciphertexts(kms_runtime) == after_first


def test_rewrap_resumes_after_a_crash_midway(
    kms_runtime, two_tenants_with_secrets, kms_admin_client, kms_standin, monkeypatch
):
    rt = kms_runtime
    rotate_kms_key(kms_admin_client, rt.keyring.kek.key_name)
    original = rt.warehouse.run_atomically
    seen = {"batches": 0}

    def crash_on_third_batch(statements):
        seen["batches"] += 1
        if seen["batches"] == 3:  # acme done (credentials, API keys); globex's first batch dies
            raise DependencyUnavailable("the warehouse went away")
        return original(statements)

    monkeypatch.setattr(rt.warehouse, "run_atomically", crash_on_third_batch)
    with pytest.raises(DependencyUnavailable):
        rewrap_all(rt)
    monkeypatch.setattr(rt.warehouse, "run_atomically", original)
    assert rt.keyring.store.get("globex").rotation_state == "ROTATING"

    report = rewrap_all(rt)
    assert (report["keysets_rotated"], report["keysets_current"]) == (0, 2)  # no second new key for anyone
    assert report["credentials_reencrypted"] == 2 and report["api_keys_reencrypted"] == 1
    assert [rt.keyring.store.get(t).key_count for t in ("acme", "globex")] == [2, 2]
    assert_all_under_primary_and_readable(rt, kms_standin, two_tenants_with_secrets)


def test_a_new_rotation_id_rotates_data_keys_without_a_kms_rotation(
    kms_runtime, two_tenants_with_secrets, kms_standin
):
    first = rewrap_all(kms_runtime, rotation_id="incident-2026-11")
    assert first["keysets_rotated"] == 2 and first["kek_primary_version"].endswith("/cryptoKeyVersions/1")
    assert rewrap_all(kms_runtime, rotation_id="incident-2026-11")["keysets_rotated"] == 0
    assert_all_under_primary_and_readable(kms_runtime, kms_standin, two_tenants_with_secrets)


def test_an_instance_holding_the_old_keyset_reads_secrets_rotated_elsewhere(
    kms_runtime, two_tenants_with_secrets, kms_standin
):
    rt = kms_runtime
    other = make_keyring(kms_standin, rt.keyring.kek.key_name, rt.keyring.store)  # another function instance
    old_primary = rt.keyring.primary_key_id("acme")
    assert other.primary_key_id("acme") == old_primary  # `other` now holds acme's keyset
    rewrap_all(rt, rotation_id="rotation-2")
    assert rt.keyring.primary_key_id("acme") != old_primary
    assert other.primary_key_id("acme") == old_primary  # stale, until a ciphertext names a newer key
    acme_secrets = [(purpose, c) for tenant, purpose, c in stored_ciphertexts(rt) if tenant == "acme"]
    unwraps_before = kms_standin.count("Decrypt", aad=associated_data("acme", KEYSET_PURPOSE))
    assert all(other.decrypt("acme", purpose, ciphertext) for purpose, ciphertext in acme_secrets)
    assert kms_standin.count("Decrypt", aad=associated_data("acme", KEYSET_PURPOSE)) == unwraps_before + 1
    assert other.primary_key_id("acme") == rt.keyring.primary_key_id("acme")


def test_rewrap_needs_the_tenant_keyset_keyring(runtime, tmp_path):
    runtime.keyring = LocalKeyring(tmp_path / "keyset.json")
    with pytest.raises(NotRotatable, match="gcp-kms"):
        rewrap_all(runtime)


def keys_command(*args: str):
    cli = typer.Typer()
    cli.add_typer(keys_app, name="keys")  # as convergence/cli/__init__.py registers it
    return CliRunner().invoke(cli, ["keys", *args])


def test_keys_rewrap_command_prints_counts(kms_runtime, two_tenants_with_secrets, kms_admin_client):
    rotate_kms_key(kms_admin_client, kms_runtime.keyring.kek.key_name)
    result = keys_command("rewrap")
    assert result.exit_code == 0, result.output
    assert "keysets rotated: 2" in result.output
    assert "credentials reencrypted: 4" in result.output and "api keys reencrypted: 2" in result.output
    assert "secret" not in result.output


def test_keys_rewrap_command_prints_json(kms_runtime, two_tenants_with_secrets):
    result = keys_command("rewrap", "--rotation-id", "manual-1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["rotation_id"], report["keysets_rotated"], report["failed"]) == ("manual-1", 2, [])


def test_keys_rewrap_command_refuses_the_local_keyring_in_one_line(runtime):
    result = keys_command("rewrap")
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: CONVERGENCE_KEYRING:")


def test_tenants_with_secrets_lists_every_tenant_once(kms_runtime, two_tenants_with_secrets):
    assert key_rotation.tenants_with_secrets(kms_runtime, kms_runtime.keyring) == ["acme", "globex"]


def test_the_client_checks_integrity_end_to_end_with_the_stand_in(kms_admin_client, kms_key_name):
    response = kms_admin_client.encrypt(name=kms_key_name, plaintext=b"wrapped key material")
    assert response.name == f"{kms_key_name}/cryptoKeyVersions/1"
    assert kms_admin_client.decrypt(name=kms_key_name, ciphertext=response.ciphertext).plaintext == (
        b"wrapped key material"
    )
    bad = kms_v1.EncryptRequest(name=kms_key_name, plaintext=b"x", plaintext_crc32c=12345)
    with pytest.raises(InvalidArgument, match="checksum"):
        kms_v1.KeyManagementServiceClient.encrypt(kms_admin_client, request=bad)


def test_tenant_keysets_work_under_a_local_kek_in_the_warehouse_store(tmp_path):
    warehouse = DuckDBWarehouse(tmp_path / "keysets.duckdb")
    warehouse.create_dataset("organizations")
    kek = AeadKek(
        tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead), "local:test"
    )
    store = WarehouseKeysetStore(warehouse, "organizations", LocalClaims(tmp_path / "claims"))
    keyring = TenantKeysetKeyring(kek, store)
    old = keyring.encrypt("acme", "api_key", SECRET)
    assert store.get("acme").kek_version is None and store.get("acme").rotated_at is None
    assert keyring.rotate_keyset("acme", rotation_id="r1", kek_version=None) == "rotated"
    assert keyring.finish_rotation("acme", "r1")
    assert keyring.rotate_keyset("acme", rotation_id="r1", kek_version=None) == "current"
    fresh = TenantKeysetKeyring(kek, store)
    assert fresh.decrypt("acme", "api_key", old) == SECRET
    assert ciphertext_key_id(fresh.encrypt("acme", "api_key", SECRET)) == store.get("acme").primary_key_id
    assert (store.get("acme").key_count, store.get("acme").rotation_state) == (2, CURRENT)
    warehouse.close()
