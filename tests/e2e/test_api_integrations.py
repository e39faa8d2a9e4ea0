"""Provider integrations over HTTP (CONTRACT §2): setup with format and provider checks, listing, storage,
and reading in steps.

Every request goes through functions-framework's test client of functions/onboard/main.py. Service account
keys carry real RSA keys generated with `cryptography`; storage is the embedded DuckDB control table and the
local keyring, inspected directly to prove the credential is only ever there as tenant-bound ciphertext.

Each provider's check has something real to prove here: OpenAI and Anthropic are the local replay server
(convergence/demo/provider_apis.py) knowing this module's keys, the gcp export is a table of the tenant's own
dataset, and the AWS and Azure files are in the tenant's folder of the source root. DeepSeek cannot be
asked, so its key is UNVERIFIED. tests/e2e/test_integration_validation.py proves the checks themselves.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.crypto.keyring import DecryptionFailed
from common.metadata.integrations import CredentialUnreadable, IntegrationMissing, read_credential, read_integration
from common.metadata.schemas import load_schema
from common.providers.aws.credentials import AwsAccessKey
from common.providers.credential_checks import parsed_credential, parsed_settings
from common.providers.gcp.credentials import GcpServiceAccount, GcpSettings
from common.runtime import Runtime
from common.settings import get_settings, reset_settings
from common.wiring import build_runtime, set_runtime
from convergence.demo.provider_apis import ProviderApiServer
from tests.e2e.support import assert_error, assert_json

MARK = "Hq4Rt8Yn"  # in every secret here: a response, row or log line showing any part of one is caught
AWS_SECRET = f"{MARK}/abcdefghijklmnopqrstuvwxyz012+="
OPENAI_KEY = f"sk-admin-{MARK}_abcdefghij-0123456789"
ANTHROPIC_KEY = f"sk-ant-admin01-{MARK}abcdefghij0123456789"
DEEPSEEK_KEY = f"sk-{MARK}abcdefghij0123456789"
EXPORT_TABLE = "gcp_billing_export_v1_0123AB_456789_ABCDEF"
BILLING_TABLE = f"local-project.acme.{EXPORT_TABLE}"  # a table of the tenant's own dataset, as embedded needs
# What each provider's check finds here (DeepSeek has no API the platform calls).
CHECKED = {"gcp": "ACTIVE", "aws": "ACTIVE", "azure": "ACTIVE", "openai": "ACTIVE", "anthropic": "ACTIVE",
           "deepseek": "UNVERIFIED"}  # fmt: skip


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The source root, holding a CUR file and an Azure export in acme's folder."""
    root = tmp_path / "sources"
    for folder, name in (("cur", "cur-00001.csv"), ("azure", "export.csv")):
        (root / "acme" / folder).mkdir(parents=True)
        (root / "acme" / folder / name).write_text("cost\n1.5\n")
    monkeypatch.setenv("FILE_SOURCE_ROOTS", str(root))
    return root.resolve()


@pytest.fixture
def apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderApiServer]:
    """OpenAI and Anthropic, answered by the replay server, which knows this module's admin keys."""
    with ProviderApiServer(openai_key=OPENAI_KEY, anthropic_key=ANTHROPIC_KEY) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_BASE", server.base_url)
        yield server


@pytest.fixture
def runtime(sources: Path, apis: ProviderApiServer) -> Runtime:
    """The embedded runtime, built once the providers' settings are in place."""
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    return rt


@pytest.fixture
def export_table(runtime: Runtime, two_tenants: dict[str, dict[str, str]]) -> str:
    """acme's billing export: a table of its own dataset with a billing export's columns."""
    schema = load_schema("tenant", "gcp_billing_export_v1").model_copy(update={"name": EXPORT_TABLE})
    runtime.warehouse.create_table("acme", schema)
    return BILLING_TABLE


@pytest.fixture(scope="module")
def key_file() -> dict[str, Any]:
    """A service account key file with a real private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "acme-billing-prod",
        "private_key_id": f"{MARK}0123456789abcdef",
        "private_key": private_key,
        "client_email": "convergence@acme-billing-prod.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def secrets_of(key_file: dict[str, Any]) -> list[str]:
    """Strings none of which may show anywhere outside the ciphertext."""
    body = key_file["private_key"].splitlines()
    return [MARK, body[3], body[10], AWS_SECRET, OPENAI_KEY, ANTHROPIC_KEY, DEEPSEEK_KEY]


CREDENTIALS = {
    "aws": {"aws_access_key_id": "AKIAHQ4RT8YN12345678", "aws_secret_access_key": AWS_SECRET},
    "azure": {
        "tenant_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": f"{MARK}~client.secret_0123",
    },
    "openai": OPENAI_KEY,
    "anthropic": ANTHROPIC_KEY,
    "deepseek": DEEPSEEK_KEY,
}
# Settings of the right shape for format refusals, which never get as far as a check.
SHAPED_SETTINGS = {
    "gcp": {"billing_export_table": BILLING_TABLE},
    "aws": {"cur_location": "/srv/exports/cur", "cur_version": "auto"},
    "azure": {"export_location": "gs://acme-azure-exports/cost"},
    "openai": {"organization_id": "org-AcmeBilling01"},
    "anthropic": {},
    "deepseek": {},
}


def setups(key_file: dict[str, Any], sources: Path) -> dict[str, dict[str, Any]]:
    """A valid setup body per provider, each naming something its check can prove."""
    return {
        "gcp": {"credential": key_file, "settings": {"billing_export_table": BILLING_TABLE}},
        "aws": {
            "credential": CREDENTIALS["aws"],
            "settings": {"cur_location": f"file://{sources}/acme/cur/"},
        },
        "azure": {
            "credential": CREDENTIALS["azure"],
            "settings": {"export_location": f"{sources}/acme/azure"},
        },
        "openai": {"credential": OPENAI_KEY, "settings": {"organization_id": "org-AcmeBilling01"}},
        "anthropic": {"credential": ANTHROPIC_KEY},
        "deepseek": {"credential": DEEPSEEK_KEY},
    }


def stored_settings(sources: Path) -> dict[str, dict[str, Any]]:
    """The settings of `setups` as stored and shown (file: URIs become plain paths, defaults filled in)."""
    return {
        "gcp": {"billing_export_table": BILLING_TABLE},
        "aws": {"cur_location": f"{sources}/acme/cur", "cur_version": "auto"},
        "azure": {"export_location": f"{sources}/acme/azure"},
        "openai": {"organization_id": "org-AcmeBilling01"},
        "anthropic": {},
        "deepseek": {},
    }


def setup(client: Any, org: str, provider: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/integrations/{org}/{provider}/setup", headers=headers, json=body)


def assert_hides(text: str, key_file: dict[str, Any]) -> None:
    for secret in secrets_of(key_file):
        assert secret not in text, secret


def moment(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def stored_rows(runtime: Any, org: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE org_slug = @org", {"org": org}) if org else ("", None)
    return runtime.warehouse.query(
        f"SELECT * FROM organizations.org_integration_credentials {where} ORDER BY org_slug, provider", params
    )


# -- setup -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", list(CHECKED))
def test_a_well_formed_credential_is_stored_with_what_its_check_proved_and_never_echoed(
    runtime, onboard_client, two_tenants, key_file, sources, export_table, provider
):
    response = setup(
        onboard_client, "acme", provider, two_tenants["acme"], setups(key_file, sources)[provider]
    )
    body = assert_json(response, 200)
    assert {k: v for k, v in body.items() if k not in ("message", "checked_at")} == {
        "org_slug": "acme",
        "provider": provider,
        "status": CHECKED[provider],
        "validated": CHECKED[provider] == "ACTIVE",
        "settings": stored_settings(sources)[provider],
    }
    assert body["message"] and moment(body["checked_at"])
    assert_hides(response.get_data(as_text=True), key_file)
    (row,) = stored_rows(runtime, "acme")
    assert row["provider"] == provider and row["status"] == CHECKED[provider]
    assert row["validated"] is (CHECKED[provider] == "ACTIVE") and row["message"] == body["message"]
    assert json.loads(row["settings"]) == stored_settings(sources)[provider]


def test_a_key_file_pasted_as_json_text_is_accepted(
    runtime, onboard_client, two_tenants, key_file, export_table
):
    body = {"credential": json.dumps(key_file), "settings": {"billing_export_table": BILLING_TABLE}}
    assert (
        assert_json(setup(onboard_client, "acme", "gcp", two_tenants["acme"], body), 200)["validated"] is True
    )
    assert (
        parsed_credential(read_integration(runtime, "acme", "gcp")).client_email == key_file["client_email"]
    )


@pytest.mark.parametrize(
    "provider,credential,rule",
    [
        ("gcp", "private_key", "gcp credential: private_key is not a PEM private key"),
        ("gcp", "type", "gcp credential: type must be 'service_account'"),
        ("gcp", "text", "gcp credential is not JSON"),
        ("aws", {"aws_access_key_id": "AKIAHQ4RT8YN12345678", "aws_secret_access_key": AWS_SECRET[:-2]},
         "aws credential: aws_secret_access_key must be 40 characters"),
        ("aws", f"arn:aws:iam::123:role/{MARK}", "aws credential: must be an access key object or a role ARN"),
        ("azure", {"tenant_id": MARK, "client_id": MARK, "client_secret": MARK}, "tenant_id must be a UUID"),
        ("openai", f"sk-proj-{MARK}abcdefghij0123456789", "openai credential: must be an admin key"),
        ("anthropic", f"sk-ant-api03-{MARK}abcdefghij0123456789", "anthropic credential: must be an admin key"),
        ("deepseek", {"key": DEEPSEEK_KEY}, "deepseek credential must be an API key string"),
    ],
    ids=["gcp-bad-pem", "gcp-wrong-type", "gcp-not-json", "aws-short-secret", "aws-bad-arn", "azure-not-uuids",
         "openai-project-key", "anthropic-api-key", "deepseek-object"],
)  # fmt: skip
def test_a_malformed_credential_is_422_invalid_credential_naming_the_rule_not_the_secret(
    runtime, onboard_client, two_tenants, key_file, provider, credential, rule
):
    if credential == "private_key":
        credential = key_file | {"private_key": key_file["private_key"].replace("PRIVATE KEY", "PUBLIC KEY")}
    elif credential == "type":
        credential = key_file | {"type": "authorized_user"}
    elif credential == "text":
        credential = f"{MARK}-{key_file['private_key']}"
    body = {"credential": credential, "settings": SHAPED_SETTINGS[provider]}
    response = setup(onboard_client, "acme", provider, two_tenants["acme"], body)
    refused = assert_error(response, 422, "invalid_credential")
    assert rule in refused["message"], refused
    assert_hides(response.get_data(as_text=True), key_file)
    assert stored_rows(runtime) == []


@pytest.mark.parametrize(
    "provider,settings,field",
    [
        ("gcp", {}, "billing_export_table is missing"),
        ("gcp", {"billing_export_table": "p.d.t'; DROP TABLE org_integration_credentials; --"},
         "billing_export_table must be"),
        ("gcp", {"billing_export_table": BILLING_TABLE, "billing_table": "x"},
         "billing_table is not a setting of this provider"),
        ("aws", {"cur_location": "exports/cur"}, "cur_location must be a gs://bucket/path URI"),
        ("aws", {"cur_location": "/cur", "cur_version": "2"}, "cur_version must be 'auto', 'legacy' or '2.0'"),
        ("azure", {"export_location": "https://example.blob.core.windows.net/x"}, "export_location must be"),
        ("openai", {"organization_id": "acme"}, "organization_id must be"),
        ("deepseek", {"model": "deepseek-chat"}, "model is not a setting of this provider"),
    ],
    ids=["gcp-missing", "gcp-injection", "gcp-unknown-key", "aws-relative", "aws-version", "azure-https",
         "openai-org", "deepseek-any"],
)  # fmt: skip
def test_bad_settings_are_422_invalid_settings_naming_the_field(
    runtime, onboard_client, two_tenants, key_file, provider, settings, field
):
    body = {"credential": setups(key_file, Path("/srv"))[provider]["credential"], "settings": settings}
    response = setup(onboard_client, "acme", provider, two_tenants["acme"], body)
    refused = assert_error(response, 422, "invalid_settings")
    assert refused["message"].startswith(f"{provider} settings: ") and field in refused["message"], refused
    assert_hides(response.get_data(as_text=True), key_file)
    assert stored_rows(runtime) == []


@pytest.mark.parametrize("provider", ["dropbox", "GCP", "s3"])
def test_an_unknown_provider_is_400_unknown_provider(runtime, onboard_client, two_tenants, provider):
    response = setup(onboard_client, "acme", provider, two_tenants["acme"], {"credential": DEEPSEEK_KEY})
    assert_error(response, 400, "unknown_provider")
    assert MARK not in response.get_data(as_text=True)


def test_a_refused_setup_leaves_the_earlier_credential_in_place(
    runtime, onboard_client, two_tenants, key_file
):
    acme = two_tenants["acme"]
    assert_json(setup(onboard_client, "acme", "deepseek", acme, {"credential": DEEPSEEK_KEY}), 200)
    assert_error(setup(onboard_client, "acme", "deepseek", acme, {"credential": "sk-short"}), 422)
    assert read_credential(runtime, "acme", "deepseek") == DEEPSEEK_KEY


# -- listing and replacing ---------------------------------------------------------------------------


def test_the_listing_shows_settings_checks_and_times_but_no_credential(
    onboard_client, two_tenants, key_file, sources, export_table
):
    acme = two_tenants["acme"]
    answers = {}
    for provider, body in setups(key_file, sources).items():
        answers[provider] = assert_json(setup(onboard_client, "acme", provider, acme, body), 200)
    listing = onboard_client.get("/api/v1/integrations/acme", headers=acme)
    integrations = assert_json(listing, 200)["integrations"]
    assert [i["provider"] for i in integrations] == sorted(CHECKED)
    for item in integrations:
        assert set(item) == {"provider", "status", "validated", "message", "checked_at", "created_at",
                             "updated_at", "settings"}  # fmt: skip
        answer = answers[item["provider"]]
        assert item["status"] == answer["status"] == CHECKED[item["provider"]]
        assert item["validated"] is answer["validated"] is (item["status"] == "ACTIVE")
        assert (item["message"], item["checked_at"]) == (answer["message"], answer["checked_at"])
        assert item["settings"] == stored_settings(sources)[item["provider"]]
        assert item["created_at"] == item["updated_at"]
    assert_hides(listing.get_data(as_text=True), key_file)
    assert "encrypted" not in listing.get_data(as_text=True)


def test_setting_up_again_replaces_the_credential_and_keeps_when_it_was_first_set_up(
    runtime, onboard_client, two_tenants
):
    acme = two_tenants["acme"]
    first, second = DEEPSEEK_KEY, "sk-" + "R" * 32
    assert_json(setup(onboard_client, "acme", "deepseek", acme, {"credential": first}), 200)
    (before,) = assert_json(onboard_client.get("/api/v1/integrations/acme", headers=acme), 200)[
        "integrations"
    ]
    assert_json(setup(onboard_client, "acme", "deepseek", acme, {"credential": second}), 200)
    assert_json(setup(onboard_client, "acme", "openai", acme, {"credential": OPENAI_KEY}), 200)

    listed = assert_json(onboard_client.get("/api/v1/integrations/acme", headers=acme), 200)["integrations"]
    assert [i["provider"] for i in listed] == ["deepseek", "openai"]
    after = listed[0]
    assert after["created_at"] == before["created_at"]
    assert moment(after["updated_at"]) > moment(before["updated_at"])
    rows = stored_rows(runtime, "acme")
    assert [r["provider"] for r in rows] == ["deepseek", "openai"]
    assert read_credential(runtime, "acme", "deepseek") == second


def test_another_tenants_key_can_neither_set_up_nor_list_integrations(runtime, onboard_client, two_tenants):
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    assert_json(setup(onboard_client, "acme", "deepseek", acme, {"credential": DEEPSEEK_KEY}), 200)

    stolen = setup(onboard_client, "acme", "deepseek", globex, {"credential": "sk-" + "G" * 32})
    assert_error(stolen, 403)
    listing = onboard_client.get("/api/v1/integrations/acme", headers=globex)
    assert_error(listing, 403)
    assert "deepseek" not in listing.get_data(as_text=True)
    assert read_credential(runtime, "acme", "deepseek") == DEEPSEEK_KEY
    assert assert_json(onboard_client.get("/api/v1/integrations/globex", headers=globex), 200) == {
        "integrations": []
    }


# -- storage -----------------------------------------------------------------------------------------


def test_the_stored_credential_is_ciphertext_that_opens_only_for_its_tenant_and_provider(
    runtime, onboard_client, two_tenants, key_file
):
    for org in ("acme", "globex"):
        body = setups(key_file, Path("/srv"))["gcp"] | {
            "credential": key_file | {"project_id": f"{org}-billing-prod"}
        }
        assert_json(setup(onboard_client, org, "gcp", two_tenants[org], body), 200)
    rows = {r["org_slug"]: r for r in stored_rows(runtime)}
    assert_hides(json.dumps(list(rows.values()), default=str), key_file)
    runtime.warehouse.execute("CHECKPOINT")
    raw = runtime.settings.duckdb_path.read_bytes()
    assert MARK.encode() not in raw and key_file["private_key"].splitlines()[3].encode() not in raw

    ciphertext = base64.b64decode(rows["acme"]["encrypted_credential"])
    assert json.loads(runtime.keyring.decrypt("acme", "integration:gcp", ciphertext)) == key_file | {
        "project_id": "acme-billing-prod"
    }
    for tenant, purpose in (("globex", "integration:gcp"), ("acme", "integration:aws")):
        with pytest.raises(DecryptionFailed):
            runtime.keyring.decrypt(tenant, purpose, ciphertext)

    # swap the two tenants' ciphertexts: neither row opens any more
    table = "organizations.org_integration_credentials"
    for org, other in (("acme", "globex"), ("globex", "acme")):
        runtime.warehouse.execute(
            f"UPDATE {table} SET encrypted_credential = @c WHERE org_slug = @org",
            {"c": rows[other]["encrypted_credential"], "org": org},
        )
    for org in ("acme", "globex"):
        with pytest.raises(CredentialUnreadable) as unreadable:
            read_integration(runtime, org, "gcp")
        assert f"/api/v1/integrations/{org}/gcp/setup" in unreadable.value.message


def test_no_part_of_a_credential_reaches_the_logs(onboard_client, two_tenants, key_file, sources, caplog):
    caplog.set_level(logging.DEBUG)
    acme = two_tenants["acme"]
    for provider, body in setups(key_file, sources).items():
        assert_json(setup(onboard_client, "acme", provider, acme, body), 200)
    bad_key_file = key_file | {"private_key": key_file["private_key"][:200]}
    assert_error(setup(onboard_client, "acme", "gcp", acme, {"credential": bad_key_file}), 422)
    assert_error(setup(onboard_client, "acme", "aws", acme, {"credential": AWS_SECRET}), 422)
    assert_json(onboard_client.get("/api/v1/integrations/acme", headers=acme), 200)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "stored the gcp integration of acme" in logged
    assert_hides(logged, key_file)


# -- reading in a step -------------------------------------------------------------------------------


def test_a_step_reads_the_credential_decrypted_but_hidden_from_repr(
    runtime, onboard_client, two_tenants, key_file, sources, export_table
):
    acme = two_tenants["acme"]
    for provider in ("gcp", "aws"):
        assert_json(setup(onboard_client, "acme", provider, acme, setups(key_file, sources)[provider]), 200)

    gcp = read_integration(runtime, "acme", "gcp")
    assert gcp.provider == "gcp" and gcp.settings == stored_settings(sources)["gcp"] and gcp.validated is True
    assert gcp.status == "ACTIVE" and gcp.checked_at is not None
    assert_hides(repr(gcp) + str(gcp), key_file)
    account = parsed_credential(gcp)
    assert isinstance(account, GcpServiceAccount) and account.info()["private_key"] == key_file["private_key"]
    settings = parsed_settings(gcp)
    assert isinstance(settings, GcpSettings)
    assert settings.table_parts() == ("local-project", "acme", EXPORT_TABLE)

    aws = parsed_credential(read_integration(runtime, "acme", "aws"))
    assert isinstance(aws, AwsAccessKey) and aws.aws_secret_access_key.get_secret_value() == AWS_SECRET


def test_a_step_needing_a_missing_integration_is_told_to_set_it_up(runtime, two_tenants):
    with pytest.raises(IntegrationMissing) as missing:
        read_integration(runtime, "acme", "azure")
    assert missing.value.code == "integration_missing"
    assert "POST /api/v1/integrations/acme/azure/setup" in missing.value.message
    assert read_credential(runtime, "acme", "azure") is None
