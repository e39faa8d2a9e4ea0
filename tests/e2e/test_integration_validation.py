"""Integrations tell the truth: ACTIVE only after one read-only call to the provider proved the credential.

Setup, validate and delete go through functions-framework's test client of functions/onboard/main.py. The
providers are real servers on loopback: OpenAI and Anthropic are the replay server
(convergence/demo/provider_apis.py, which checks keys and can inject faults), Cloud Storage is
gcp-storage-emulator, BigQuery is the platform's own engine (DuckDB, and bqemulator for the BigQuery client).
Google's own endpoints cannot be reached from a test, so the check made in a tenant's Google Cloud project is
driven with a stand-in client that answers as the BigQuery client does (its errors are google.api_core's).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from common.contracts.integrations import IntegrationSetupRequest
from common.metadata.integrations import NEVER_CHECKED, read_credential, read_integration
from common.metadata.schemas import load_schema
from common.providers.gcp.billing_export import CORE_COLUMNS
from common.providers.gcp.credentials import GcpServiceAccount, GcpSettings
from common.providers.verification import verify_credential
from common.runtime import Runtime
from common.services import integrations
from common.settings import get_settings, reset_settings
from common.wiring import build_runtime, set_runtime
from convergence.demo.provider_apis import Fault, ProviderApiServer
from convergence.emulators.process import free_port
from tests.conftest import wait_for_bus
from tests.e2e.support import assert_error, assert_json

MARK = "Zq7Wp3Lx"  # in every secret here: an answer, row or log line showing any part of one is caught
OPENAI_KEY = f"sk-admin-{MARK}_0123456789abcdefghij"
ANTHROPIC_KEY = f"sk-ant-admin01-{MARK}0123456789abcdefghij"
KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}
WRONG_KEYS = {
    "openai": f"sk-admin-{MARK}-wrong-0123456789abcd",
    "anthropic": f"sk-ant-admin01-{MARK}wrong0123456789ab",
}
PATHS = {"openai": "/v1/organization/costs", "anthropic": "/v1/organizations/cost_report"}
LABELS = {"openai": "OpenAI costs API", "anthropic": "Anthropic cost report API"}
REFUSALS = {"openai": "Incorrect API key provided.", "anthropic": "invalid x-api-key"}
EXPORT = "gcp_billing_export_v1_0123AB_456789_ABCDEF"
LOCATION_SETTING = {"aws": "cur_location", "azure": "export_location"}
OUTSIDE = "is outside the directories file sources may read"
AWS_KEY = {
    "aws_access_key_id": "AKIAZQ7WP3LX12345678",
    "aws_secret_access_key": f"{MARK}/abcdefghijklmnopqrstuvwxyz012+=",
}
AZURE_PRINCIPAL = {
    "tenant_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "client_secret": f"{MARK}~client.secret_0123",
}
FILE_CREDENTIALS = {"aws": AWS_KEY, "azure": AZURE_PRINCIPAL}


# -- the platform and its providers ------------------------------------------------------------------


@pytest.fixture
def apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderApiServer]:
    """OpenAI and Anthropic, answered by the replay server knowing KEYS."""
    with ProviderApiServer(openai_key=OPENAI_KEY, anthropic_key=ANTHROPIC_KEY) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_BASE", server.base_url)
        yield server


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The source root (FILE_SOURCE_ROOTS); each tenant's files are in its own folder of it."""
    root = tmp_path / "sources"
    root.mkdir()
    monkeypatch.setenv("FILE_SOURCE_ROOTS", str(root))
    return root.resolve()


@pytest.fixture
def runtime(apis: ProviderApiServer, sources: Path) -> Runtime:
    """The embedded runtime, built once the providers' settings are in place."""
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    return rt


@pytest.fixture
def keys(two_tenants: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The API key headers of acme and globex, both onboarded."""
    return two_tenants


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
    }


def secrets(key_file: dict[str, Any] | None = None) -> list[str]:
    """Strings none of which may show in an answer, a stored message or a log line."""
    found = [MARK, *KEYS.values(), *WRONG_KEYS.values(), AWS_KEY["aws_secret_access_key"]]
    if key_file is not None:
        found += key_file["private_key"].splitlines()[2:12]
    return found


def assert_hides(text: str, key_file: dict[str, Any] | None = None) -> None:
    for secret in secrets(key_file):
        assert secret not in text, secret


def setup(
    client: Any, org: str, provider: str, headers: dict[str, str], credential: Any, **settings: Any
) -> Any:
    body = {"credential": credential, "settings": settings}
    return client.post(f"/api/v1/integrations/{org}/{provider}/setup", headers=headers, json=body)


def validate(client: Any, org: str, provider: str, headers: dict[str, str]) -> Any:
    return client.post(f"/api/v1/integrations/{org}/{provider}/validate", headers=headers)


def delete(client: Any, org: str, provider: str, headers: dict[str, str]) -> Any:
    return client.delete(f"/api/v1/integrations/{org}/{provider}", headers=headers)


def read_one(client: Any, org: str, provider: str, headers: dict[str, str]) -> Any:
    return client.get(f"/api/v1/integrations/{org}/{provider}", headers=headers)


def listed(client: Any, org: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The tenant's integrations as listed, by provider."""
    items = assert_json(client.get(f"/api/v1/integrations/{org}", headers=headers), 200)["integrations"]
    return {item["provider"]: item for item in items}


def stored_rows(rt: Runtime, org: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE org_slug = @org", {"org": org}) if org else ("", None)
    return rt.warehouse.query(
        f"SELECT * FROM organizations.org_integration_credentials {where} ORDER BY org_slug, provider", params
    )


def point(rt: Runtime, **settings: Any) -> None:
    """Change some of the runtime's settings (e.g. where a provider's API is) from now on."""
    rt.settings = rt.settings.model_copy(update=settings)


# -- OpenAI and Anthropic: one call to their cost APIs ------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_admin_key_the_cost_api_accepts_is_active_after_one_read_only_call(
    apis, runtime, onboard_client, keys, provider
):
    answer = assert_json(setup(onboard_client, "acme", provider, keys["acme"], KEYS[provider]), 200)

    assert (answer["status"], answer["validated"]) == ("ACTIVE", True)
    assert (
        f"{LABELS[provider]} accepted the key (GET {PATHS[provider]} answered HTTP 200)" == answer["message"]
    )
    (call,) = apis.requests_to(provider)  # one request, a read of one day
    assert call.path == PATHS[provider] and call.status == 200
    assert call.query["bucket_width"] == ["1d"] and call.query["limit"] == ["1"]
    item = listed(onboard_client, "acme", keys["acme"])[provider]
    assert (item["status"], item["validated"], item["message"]) == ("ACTIVE", True, answer["message"])
    assert item["checked_at"] == answer["checked_at"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_key_the_provider_refuses_with_401_is_invalid_and_still_stored(
    apis, runtime, onboard_client, keys, provider
):
    response = setup(onboard_client, "acme", provider, keys["acme"], WRONG_KEYS[provider])
    answer = assert_json(response, 200)

    assert (answer["status"], answer["validated"]) == ("INVALID", False)
    assert f"{LABELS[provider]} refused the key (HTTP 401): {REFUSALS[provider]}" in answer["message"]
    assert f"POST /api/v1/integrations/acme/{provider}/validate" in answer["message"]
    assert [r.status for r in apis.requests_to(provider)] == [401]
    assert read_credential(runtime, "acme", provider) == WRONG_KEYS[provider]
    assert listed(onboard_client, "acme", keys["acme"])[provider]["status"] == "INVALID"
    assert_hides(response.get_data(as_text=True))


def test_a_provider_that_cannot_be_reached_leaves_the_key_unverified_with_the_reason(
    runtime, onboard_client, keys
):
    point(runtime, openai_api_base=f"http://127.0.0.1:{free_port()}")  # nothing listens there

    answer = assert_json(setup(onboard_client, "acme", "openai", keys["acme"], OPENAI_KEY), 200)

    assert (answer["status"], answer["validated"]) == ("UNVERIFIED", False)
    assert answer["message"].startswith("could not reach OpenAI costs API at 127.0.0.1 (ConnectError)")
    assert (
        "stored after a format check only: POST /api/v1/integrations/acme/openai/validate"
        in answer["message"]
    )
    assert read_credential(runtime, "acme", "openai") == OPENAI_KEY
    item = listed(onboard_client, "acme", keys["acme"])["openai"]
    assert (item["status"], item["validated"], item["message"]) == ("UNVERIFIED", False, answer["message"])


def test_a_provider_that_never_answers_is_unverified_after_the_timeout(runtime, onboard_client, keys):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        point(
            runtime,
            anthropic_api_base=f"http://127.0.0.1:{silent.getsockname()[1]}",
            http_timeout_seconds=0.3,
        )
        started = time.monotonic()
        answer = assert_json(setup(onboard_client, "acme", "anthropic", keys["acme"], ANTHROPIC_KEY), 200)
        elapsed = time.monotonic() - started

    assert answer["status"] == "UNVERIFIED"
    assert answer["message"].startswith("Anthropic cost report API at 127.0.0.1 did not answer within 0.3 s")
    assert elapsed < 5, elapsed


@pytest.mark.parametrize(
    ("fault", "said"), [(Fault(503), "(HTTP 503)"), (Fault(429, "30"), "(HTTP 429 (rate limited))")]
)
def test_a_provider_outage_leaves_the_key_unverified_and_validate_proves_it_later(
    apis, runtime, onboard_client, keys, fault, said
):
    apis.inject("openai", fault)

    answer = assert_json(setup(onboard_client, "acme", "openai", keys["acme"], OPENAI_KEY), 200)
    assert answer["status"] == "UNVERIFIED" and f"OpenAI costs API is unavailable {said}" in answer["message"]
    assert len(apis.requests_to("openai")) == 1  # a check is one call: never retried

    checked = assert_json(validate(onboard_client, "acme", "openai", keys["acme"]), 200)
    assert (checked["status"], checked["validated"]) == ("ACTIVE", True)
    assert set(checked) == {"provider", "status", "validated", "message", "checked_at"}
    assert listed(onboard_client, "acme", keys["acme"])["openai"]["status"] == "ACTIVE"


def test_validate_tries_the_stored_key_again_and_follows_the_providers_answer(
    apis, runtime, onboard_client, keys
):
    acme = keys["acme"]
    first = assert_json(setup(onboard_client, "acme", "anthropic", acme, ANTHROPIC_KEY), 200)
    assert first["status"] == "ACTIVE"

    seen = []
    for fault in (Fault(401), None, Fault(502), Fault(403)):
        if fault is not None:
            apis.inject("anthropic", fault)
        answer = assert_json(validate(onboard_client, "acme", "anthropic", acme), 200)
        item = listed(onboard_client, "acme", acme)["anthropic"]
        assert assert_json(read_one(onboard_client, "acme", "anthropic", acme), 200) == item
        assert (item["status"], item["message"], item["checked_at"]) == (
            answer["status"], answer["message"], answer["checked_at"]
        )  # fmt: skip
        seen.append((answer["status"], answer["validated"]))

    assert seen == [("INVALID", False), ("ACTIVE", True), ("UNVERIFIED", False), ("INVALID", False)]
    assert len(apis.requests_to("anthropic")) == 5  # the setup's call, then one per validate
    assert read_credential(runtime, "acme", "anthropic") == ANTHROPIC_KEY


def test_a_malformed_key_is_still_422_and_never_sent_to_the_provider(apis, runtime, onboard_client, keys):
    response = setup(onboard_client, "acme", "openai", keys["acme"], f"sk-proj-{MARK}abcdefghij0123456789")
    assert_error(response, 422, "invalid_credential")
    assert apis.requests_to("openai") == [] and stored_rows(runtime) == []


def test_a_deepseek_key_is_unverified_saying_no_check_can_be_made(runtime, onboard_client, keys):
    answer = assert_json(
        setup(onboard_client, "acme", "deepseek", keys["acme"], f"sk-{MARK}abcdefghij0123456789"), 200
    )
    assert (answer["status"], answer["validated"]) == ("UNVERIFIED", False)
    assert "no DeepSeek API address to call" in answer["message"]
    assert_error(validate(onboard_client, "acme", "deepseek", keys["globex"]), 403)
    assert (
        assert_json(validate(onboard_client, "acme", "deepseek", keys["acme"]), 200)["status"] == "UNVERIFIED"
    )


# -- gcp: the billing export table ---------------------------------------------------------------------


def make_export_table(rt: Runtime, tenant: str, name: str = EXPORT) -> None:
    schema = load_schema("tenant", "gcp_billing_export_v1").model_copy(update={"name": name})
    rt.warehouse.create_table(tenant, schema)


def test_a_gcp_export_in_the_tenants_dataset_is_active_and_a_missing_one_invalid_until_it_exists(
    runtime, onboard_client, keys, key_file
):
    acme, table = keys["acme"], f"local-project.acme.{EXPORT}"
    missing = assert_json(
        setup(onboard_client, "acme", "gcp", acme, key_file, billing_export_table=table), 200
    )
    assert (missing["status"], missing["validated"]) == ("INVALID", False)
    assert missing["message"].startswith(f"billing export table {table} does not exist")

    make_export_table(runtime, "acme")
    checked = assert_json(validate(onboard_client, "acme", "gcp", acme), 200)
    assert (checked["status"], checked["validated"]) == ("ACTIVE", True)
    assert checked["message"] == (
        f"billing export table {table} exists in the platform's warehouse, where runs of this deployment"
        " read it (the service account key is not used here)"
    )
    assert read_integration(runtime, "acme", "gcp").validated is True


@pytest.mark.parametrize(
    ("table", "found"),
    [
        (f"local-project.globex.{EXPORT}", "billing_export_table must be a table of local-project.acme"),
        (f"other-project.acme.{EXPORT}", "billing_export_table must be a table of local-project.acme"),
        ("local-project.acme.pipeline_runs", "is not a billing export: it lacks billing_account_id"),
    ],
    ids=["another-tenants-dataset", "another-project", "not-an-export"],
)
def test_a_gcp_export_a_run_could_not_read_is_invalid(runtime, onboard_client, keys, key_file, table, found):
    make_export_table(runtime, "globex")
    answer = assert_json(
        setup(onboard_client, "acme", "gcp", keys["acme"], key_file, billing_export_table=table), 200
    )
    assert answer["status"] == "INVALID" and found in answer["message"], answer["message"]
    assert_hides(json.dumps(answer), key_file)


class StandInBigQuery:
    """Answers tables.get as the BigQuery client does: a table with a schema, or google.api_core's errors."""

    def __init__(self, error: Exception | None, columns: tuple[str, ...]) -> None:
        self.error, self.columns = error, columns
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def get_table(self, table: str, **options: Any) -> Any:
        self.calls.append((table, options))
        if self.error is not None:
            raise self.error
        return SimpleNamespace(schema=[bigquery.SchemaField(name, "STRING") for name in self.columns])

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "columns", "status", "found"),
    [
        (None, CORE_COLUMNS, "ACTIVE", "gserviceaccount.com can read billing export table acme-billing"),
        (gexc.NotFound("Not found: Table"), (), "INVALID", "does not exist"),
        (gexc.Forbidden("Access Denied"), (), "INVALID", "may not read acme-billing-prod.billing"),
        (auth_exceptions.RefreshError("invalid_grant: Invalid JWT Signature."), (), "INVALID",
         "Google refused the gcp integration's service account key"),
        (gexc.ServiceUnavailable("backend error"), (), "UNVERIFIED", "BigQuery unavailable"),
        (requests.exceptions.ConnectionError("connection refused"), (), "UNVERIFIED", "BigQuery unavailable"),
        (None, ("cost", "sku"), "INVALID", "is not a billing export: it lacks billing_account_id"),
    ],
    ids=["readable", "not-found", "forbidden", "key-refused", "unavailable", "unreachable", "not-an-export"],
)  # fmt: skip
def test_a_gcp_key_in_the_tenants_project_is_tried_with_one_bigquery_table_get(
    monkeypatch, key_file, error, columns, status, found
):
    client = StandInBigQuery(error, columns)
    made: list[dict[str, Any]] = []

    def make_client(key: dict[str, Any]) -> StandInBigQuery:
        made.append(key)
        return client

    monkeypatch.setattr("common.providers.gcp.verify.tenant_bigquery_client", make_client)
    google_cloud = SimpleNamespace(
        settings=get_settings().model_copy(update={"convergence_warehouse": "bigquery"})
    )
    table = "acme-billing-prod.billing.gcp_billing_export_v1"

    outcome = verify_credential(
        google_cloud, "acme", "gcp", GcpServiceAccount.model_validate(key_file),  # type: ignore[arg-type]
        GcpSettings(billing_export_table=table), raw_secret=json.dumps(key_file),
    )  # fmt: skip

    assert outcome.status == status and found in outcome.message, outcome.message
    assert [call[0] for call in client.calls] == [table]  # one read-only call
    assert client.calls[0][1] == {"retry": None, "timeout": 10.0} and client.closed
    assert made[0]["private_key"] == key_file["private_key"]


def test_an_error_text_echoing_a_key_file_is_redacted(monkeypatch, key_file):
    pem_line = key_file["private_key"].splitlines()[5]
    echo = gexc.BadRequest(f"cannot use key {key_file['private_key_id']} ({pem_line}) here")
    monkeypatch.setattr(
        "common.providers.gcp.verify.tenant_bigquery_client", lambda key: StandInBigQuery(echo, ())
    )
    google_cloud = SimpleNamespace(
        settings=get_settings().model_copy(update={"convergence_warehouse": "bigquery"})
    )

    outcome = verify_credential(
        google_cloud, "acme", "gcp", GcpServiceAccount.model_validate(key_file),  # type: ignore[arg-type]
        GcpSettings(billing_export_table="acme-billing-prod.billing.export"), raw_secret=json.dumps(key_file),
    )  # fmt: skip

    assert outcome.status == "INVALID" and "BigQuery refused to read" in outcome.message
    assert "[redacted]" in outcome.message
    assert_hides(outcome.message, key_file)


@pytest.fixture
def bigquery_platform(bigquery_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The platform on bqemulator (a project of its own) with the integrations table of an older release."""
    monkeypatch.setenv("CONVERGENCE_WAREHOUSE", "bigquery")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator)
    monkeypatch.setenv("GCP_PROJECT_ID", f"conv-{uuid.uuid4().hex[:10]}")
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    schema = load_schema("control", "org_integration_credentials")
    older = schema.model_copy(
        update={"fields": [f for f in schema.fields if f.name not in ("message", "checked_at")]}
    )
    rt.warehouse.create_dataset(rt.settings.control_dataset)
    rt.warehouse.create_table(rt.settings.control_dataset, older)
    rt.warehouse.create_dataset("acme")
    return rt


def test_a_gcp_export_on_the_bigquery_emulator_is_checked_through_the_bigquery_client(
    bigquery_platform: Runtime, key_file
):
    rt = bigquery_platform
    make_export_table(rt, "acme")
    table = f"{rt.settings.gcp_project_id}.acme.{EXPORT}"
    request = IntegrationSetupRequest(credential=key_file, settings={"billing_export_table": table})

    stored = integrations.setup_integration(rt, "acme", "gcp", request)
    assert (stored["status"], stored["validated"]) == ("ACTIVE", True), stored["message"]
    (row,) = rt.warehouse.query(
        f"SELECT message, checked_at FROM `{rt.settings.control_dataset}`.`org_integration_credentials`"
    )  # columns the older table lacked, added by the first write
    assert row["message"] == stored["message"] and row["checked_at"] == stored["checked_at"]

    rt.warehouse.execute(f"DROP TABLE `acme`.`{EXPORT}`")
    checked = integrations.validate_integration(rt, "acme", "gcp")
    assert (checked["status"], checked["validated"]) == ("INVALID", False)
    assert checked["message"].startswith(f"billing export table {table} does not exist")
    (entry,) = integrations.list_integrations(rt, "acme")["integrations"]
    assert (entry["status"], entry["validated"], entry["message"]) == ("INVALID", False, checked["message"])


# -- aws and azure: the location of their files --------------------------------------------------------


def place(root: Path, *parts: str, files: int = 1) -> Path:
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        (folder / f"part-{number:05d}.csv").write_text("cost\n1.5\n")
    return folder


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_a_file_location_in_the_tenants_folder_is_active_naming_what_it_lists(
    runtime, onboard_client, keys, sources, provider
):
    folder = place(sources, "acme", provider, files=2)
    (folder / "manifest.json").write_text("{}")  # not a billing file
    settings = {LOCATION_SETTING[provider]: str(folder)}

    answer = assert_json(
        setup(onboard_client, "acme", provider, keys["acme"], FILE_CREDENTIALS[provider], **settings), 200
    )

    assert (answer["status"], answer["validated"]) == ("ACTIVE", True)
    assert answer["message"] == f"{LOCATION_SETTING[provider]} {folder} lists 2 files the platform can read"
    assert_hides(json.dumps(answer))


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_a_file_location_a_run_could_not_read_is_invalid_and_an_empty_one_active(
    runtime, onboard_client, keys, sources, provider
):
    acme, setting = keys["acme"], LOCATION_SETTING[provider]
    other_tenants = place(sources, "globex", provider)
    empty = sources / "acme" / "empty"
    empty.mkdir(parents=True)
    cases = {
        str(other_tenants): ("INVALID", f"{OUTSIDE} (a tenant's files are read from its own folder acme/"),
        str(sources / "acme" / "missing"): ("INVALID", "does not exist"),
        "/etc": ("INVALID", OUTSIDE),
        str(empty): ("ACTIVE", "holds no csv, ndjson or parquet files yet; runs fail until the export"),
    }
    for location, (status, found) in cases.items():
        answer = assert_json(
            setup(onboard_client, "acme", provider, acme, FILE_CREDENTIALS[provider], **{setting: location}),
            200,
        )
        assert answer["status"] == status and found in answer["message"], (location, answer["message"])


@pytest.fixture
def bucket(gcs_emulator: str) -> Iterator[storage.Bucket]:
    client = storage.Client(
        project="test-project",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=gcs_emulator),
    )
    created = client.create_bucket(f"exports-{uuid.uuid4().hex[:12]}")
    yield created
    for blob in client.list_blobs(created.name):
        blob.delete()
    created.delete()


def test_a_gs_location_is_listed_with_the_cloud_storage_client(
    gcs_emulator, bucket, runtime, onboard_client, keys
):
    point(runtime, storage_emulator_host=gcs_emulator)
    for name in ("cur/2024-05/part-1.csv.gz", "cur/2024-05/part-2.csv.gz", "cur-old/x.csv"):
        bucket.blob(name).upload_from_string(b"cost\n1\n")
    acme = keys["acme"]

    def check(location: str) -> dict[str, Any]:
        return assert_json(setup(onboard_client, "acme", "aws", acme, AWS_KEY, cur_location=location), 200)

    folder = check(f"gs://{bucket.name}/cur")
    assert (folder["status"], folder["message"]) == (
        "ACTIVE",
        f"cur_location gs://{bucket.name}/cur lists 2 files the platform can read",
    )
    assert check(f"gs://{bucket.name}/cur/2024-05/part-1.csv.gz")["message"].endswith(
        "lists 1 file the platform can read"
    )
    assert "holds no csv, ndjson or parquet files yet" in check(f"gs://{bucket.name}/nothing-yet")["message"]
    missing = check(f"gs://{bucket.name}-missing/cur")
    assert missing["status"] == "INVALID" and "does not exist" in missing["message"], missing["message"]


def test_an_unreachable_cloud_storage_leaves_a_gs_location_unverified(runtime, onboard_client, keys):
    point(runtime, storage_emulator_host=f"http://127.0.0.1:{free_port()}")
    answer = assert_json(
        setup(
            onboard_client,
            "acme",
            "azure",
            keys["acme"],
            AZURE_PRINCIPAL,
            export_location="gs://acme-exports/cost",
        ),
        200,
    )
    assert answer["status"] == "UNVERIFIED"
    assert answer["message"].startswith("export_location could not be listed: Cloud Storage unavailable")


# -- delete, 404s and tenants --------------------------------------------------------------------------


def test_deleting_an_integration_removes_its_row_and_a_later_run_fails_naming_the_setup(
    apis, runtime, onboard_client, trigger_client, keys
):
    acme = keys["acme"]
    assert_json(setup(onboard_client, "acme", "openai", acme, OPENAI_KEY), 200)
    assert_json(setup(onboard_client, "acme", "anthropic", acme, ANTHROPIC_KEY), 200)
    (row,) = [r for r in stored_rows(runtime, "acme") if r["provider"] == "openai"]

    assert assert_json(delete(onboard_client, "acme", "openai", acme), 200) == {
        "provider": "openai",
        "deleted": True,
    }

    remaining = stored_rows(runtime)
    assert [(r["org_slug"], r["provider"]) for r in remaining] == [("acme", "anthropic")]
    assert row["encrypted_credential"] not in json.dumps(remaining, default=str)
    assert read_credential(runtime, "acme", "openai") is None
    assert list(listed(onboard_client, "acme", acme)) == ["anthropic"]
    assert_error(delete(onboard_client, "acme", "openai", acme), 404, "integration_not_found")
    assert_error(validate(onboard_client, "acme", "openai", acme), 404, "integration_not_found")

    calls = len(apis.requests_to("openai"))
    response = trigger_client.post(
        "/api/v1/pipelines/run/acme/openai/cost/costs_focus", headers=acme, json={"date": "2025-08-01"}
    )
    run_id = assert_json(response, 202)["pipeline_logging_id"]
    wait_for_bus(runtime)
    view = assert_json(trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme), 200)
    assert view["status"] == "FAILED"
    assert "acme has no openai integration" in view["error_message"]
    assert "POST /api/v1/integrations/acme/openai/setup" in view["error_message"]
    assert len(apis.requests_to("openai")) == calls  # nothing was sent without a key


@pytest.mark.parametrize("call", [validate, read_one, delete], ids=["validate", "read", "delete"])
def test_an_integration_never_set_up_is_404_and_an_unknown_provider_400(runtime, onboard_client, keys, call):
    missing = assert_error(call(onboard_client, "acme", "openai", keys["acme"]), 404, "integration_not_found")
    assert missing["message"] == "acme has no openai integration"
    assert_error(call(onboard_client, "acme", "dropbox", keys["acme"]), 400, "unknown_provider")
    assert_error(call(onboard_client, "acme", "openai", {}), 401)


def test_another_tenant_can_neither_validate_nor_delete_an_integration(apis, runtime, onboard_client, keys):
    acme, globex = keys["acme"], keys["globex"]
    assert_json(setup(onboard_client, "acme", "openai", acme, OPENAI_KEY), 200)
    before = stored_rows(runtime)

    for call in (validate, read_one, delete):
        refused = call(onboard_client, "acme", "openai", globex)
        assert_error(refused, 403)
        assert "openai" not in refused.get_data(as_text=True)
        # globex's own path: it has no integration, and learns nothing of acme's
        assert_error(call(onboard_client, "globex", "openai", globex), 404, "integration_not_found")

    assert stored_rows(runtime) == before
    assert len(apis.requests_to("openai")) == 1  # only acme's setup reached the provider
    assert listed(onboard_client, "acme", acme)["openai"]["status"] == "ACTIVE"


# -- secrets -------------------------------------------------------------------------------------------


def echo(provider: str, status: int, text: str) -> Fault:
    """An error answer of the provider whose message is `text` (in the provider's error shape)."""
    body = {"error": {"type": "authentication_error", "message": text}}
    return Fault(
        status, body=json.dumps(body if provider == "openai" else {"type": "error", **body}).encode()
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_provider_echoing_the_key_never_gets_it_into_an_answer_a_row_or_a_log(
    apis, runtime, onboard_client, keys, provider, caplog
):
    caplog.set_level(logging.DEBUG)
    acme, key = keys["acme"], KEYS[provider]
    echoes: list[Callable[[], Fault]] = [
        lambda: echo(provider, 401, f"Incorrect API key provided: {key}."),
        lambda: echo(provider, 403, f"key ending {key[9:30]} may not read costs"),
        lambda: echo(provider, 400, f"bad request https://api.example/v1?api_key={key}&x=1"),
        lambda: echo(provider, 503, f"upstream rejected Bearer {key[:-3]}***"),
        lambda: Fault(500, body=f"<html>{key}</html>".encode(), content_type="text/html"),
    ]
    texts = []
    for make in echoes:
        apis.inject(provider, make())
        answer = setup(onboard_client, "acme", provider, acme, key)
        texts.append(answer.get_data(as_text=True))
        apis.inject(provider, make())
        texts.append(validate(onboard_client, "acme", provider, acme).get_data(as_text=True))
        texts.append(json.dumps(stored_rows(runtime, "acme"), default=str))
        texts.append(onboard_client.get("/api/v1/integrations/acme", headers=acme).get_data(as_text=True))

    statuses = [json.loads(text)["status"] for text in texts[0::4]]
    assert statuses == ["INVALID", "INVALID", "UNVERIFIED", "UNVERIFIED", "UNVERIFIED"]
    assert "refused the key (HTTP 401): Incorrect API key provided: [redacted]." in texts[0]
    logged = caplog.text + "".join(str(record.args) for record in caplog.records)
    assert f"stored the {provider} integration of acme: INVALID" in logged
    for text in [*texts, logged]:
        assert_hides(text)


def test_rows_stored_before_checks_existed_read_unverified_until_validated(
    apis, runtime, onboard_client, keys
):
    """An integrations table of an older release (no message, checked_at) with a row it wrote."""
    control = runtime.settings.control_dataset
    schema = load_schema("control", "org_integration_credentials")
    older = schema.model_copy(
        update={"fields": [f for f in schema.fields if f.name not in ("message", "checked_at")]}
    )
    runtime.warehouse.create_table(control, older, recreate=True)
    runtime.caches.pop("integration_check_columns_ready", None)  # as a new instance finds the table
    ciphertext = base64.b64encode(
        runtime.keyring.encrypt("acme", "integration:openai", OPENAI_KEY.encode())
    ).decode()
    now = dt.datetime.now(dt.UTC)
    runtime.warehouse.execute(
        f"INSERT INTO `{control}`.`org_integration_credentials` (org_slug, provider, encrypted_credential,"
        " settings, status, validated, created_at, updated_at)"
        " VALUES ('acme', 'openai', @c, '{}', 'ACTIVE', TRUE, @now, @now)",
        {"c": ciphertext, "now": now},
    )

    before = listed(onboard_client, "acme", keys["acme"])["openai"]
    assert (before["status"], before["validated"], before["checked_at"]) == ("UNVERIFIED", False, None)
    assert before["message"] == NEVER_CHECKED
    assert read_integration(runtime, "acme", "openai").validated is False

    checked = assert_json(validate(onboard_client, "acme", "openai", keys["acme"]), 200)
    assert (checked["status"], checked["validated"]) == ("ACTIVE", True)
    after = listed(onboard_client, "acme", keys["acme"])["openai"]
    assert (after["status"], after["validated"], after["checked_at"]) == (
        "ACTIVE",
        True,
        checked["checked_at"],
    )
    assert read_integration(runtime, "acme", "openai").validated is True


@pytest.mark.parametrize(
    "stored", ["not base64 at all!", "bm90IGEgY2lwaGVydGV4dA=="], ids=["garbled", "foreign"]
)
def test_a_stored_credential_that_cannot_be_decrypted_fails_the_check_clearly(
    runtime, onboard_client, keys, stored
):
    assert_json(setup(onboard_client, "acme", "openai", keys["acme"], KEYS["openai"]), 200)
    control = runtime.settings.control_dataset
    runtime.warehouse.execute(
        f"UPDATE `{control}`.`org_integration_credentials` SET encrypted_credential = @stored"
        " WHERE org_slug = 'acme' AND provider = 'openai'",
        {"stored": stored},
    )

    answer = validate(onboard_client, "acme", "openai", keys["acme"])

    error = assert_error(answer, 422, "credential_unreadable")
    assert "/api/v1/integrations/acme/openai/setup" in error["message"]
