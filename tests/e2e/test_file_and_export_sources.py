"""source.files and gcp.billing_export as a tenant's pipeline runs them, on onboarded tenants.

Files come from a source root on disk and from the Cloud Storage emulator; billing exports from the
tenant's own dataset in DuckDB and in the BigQuery emulator. The Google Cloud path (the tenant's service
account, its project) is exercised up to the network: credentials are built and inspected, and the day's
query runs against the BigQuery emulator standing in for the tenant's project.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage

from common.contracts.integrations import IntegrationSetupRequest
from common.errors import TerminalError, TransientError
from common.metadata.schemas import load_schema
from common.processors.registry import StepContext, StepResult, get_processor
from common.providers.gcp.billing_export import (
    GOOGLE_TOKEN_URI,
    READ_ONLY_SCOPE,
    ExportTable,
    copy_from_tenant_project,
    day_query,
    service_account_credentials,
    tenant_bigquery_client,
    tenant_project_errors,
)
from common.runtime import Runtime
from common.services.integrations import setup_integration
from common.settings import get_settings, reset_settings
from common.templates.models import PipelineTemplate
from common.templates.resolver import resolve_template
from common.warehouse.bigquery import BigQueryWarehouse
from common.warehouse.sql import table_ref
from common.wiring import build_runtime, set_runtime
from convergence.demo.gcp_billing import daily_totals, generate_billing_export

DATA = Path("/work/shared/data")
AWS_SAMPLE = DATA / "aws" / "cur_legacy_sample.csv"
AZURE_SAMPLE = DATA / "azure" / "ea_export_sample.csv"
FOCUS_SAMPLE = DATA / "focus" / "focus_1_0_sample.csv"
AWS_SAMPLE_COST = 1.6823086974  # sum of lineItem/UnblendedCost over the sample's 1,281 rows
DAY = dt.date(2024, 5, 2)
EXPORT_START = DAY - dt.timedelta(days=1)
SOURCE_TABLE = "gcp_billing_export_source"
CUR_STEP = {
    "step_id": "load", "ps_type": "source.files", "table": "aws_cur_raw", "integration": "aws",
    "location_setting": "cur_location", "uri": "{source_uri}", "format": "auto", "column_names": "snake_case",
    "required_columns": ["line_item_unblended_cost", "line_item_usage_start_date"],
    "optional_columns": ["line_item_resource_id"],
}  # fmt: skip
EXPORT_STEP = {"step_id": "copy", "ps_type": "gcp.billing_export", "table": "gcp_billing_export_v1"}
AWS_KEY = {"aws_access_key_id": "AKIAABCDEFGHIJKLMNOP", "aws_secret_access_key": "a" * 40}


# -- helpers -----------------------------------------------------------------------------------------------


def run_step(
    rt: Runtime, tenant: str, step: dict[str, Any], request: dict[str, Any] | None = None
) -> StepResult:
    """Resolve a one-step pipeline for the tenant (as a run snapshot would hold it) and execute the step."""
    template = PipelineTemplate.model_validate(
        {"variables": {"source_uri": {"type": "string", "default": "", "overridable": True}}, "steps": [step]}
    )
    pipeline = resolve_template(
        template, tenant_id=tenant, provider="aws", domain="cost", template_name="load", run_id="run-1",
        request=request, today=DAY + dt.timedelta(days=1),
    )  # fmt: skip
    ctx = StepContext(runtime=rt, tenant_id=tenant, run_id="run-1", pipeline=pipeline, step=pipeline.steps[0])
    return get_processor(step["ps_type"])(ctx)


def failed_step(
    rt: Runtime, tenant: str, step: dict[str, Any], request: dict[str, Any] | None = None
) -> TerminalError:
    with pytest.raises(TerminalError) as caught:
        run_step(rt, tenant, step, request)
    return caught.value


def day_totals(rt: Runtime, tenant: str, table: str, day: dt.date) -> tuple[int, float]:
    row = rt.warehouse.query(
        f"SELECT COUNT(*) AS n, SUM(cost) AS cost FROM {table_ref(tenant, table)}"
        " WHERE usage_start_time >= TIMESTAMP(@date) AND usage_start_time < TIMESTAMP(DATE_ADD(@date, INTERVAL 1 DAY))",
        {"date": day},
    )[0]
    return int(row["n"]), round(float(row["cost"] or 0), 6)


def cur2_parquet(path: Path, rows: int) -> None:
    """A CUR 2.0-style Parquet file (snake_case names, typed values) made from the legacy sample."""
    sample = pa_csv.read_csv(AWS_SAMPLE).slice(0, rows)
    table = pa.table(
        {
            "line_item_unblended_cost": sample.column("lineItem/UnblendedCost").cast(pa.float64()),
            "line_item_usage_start_date": sample.column("lineItem/UsageStartDate"),
            "line_item_currency_code": sample.column("lineItem/CurrencyCode"),
        }
    )
    pq.write_table(table, path)


@pytest.fixture
def source_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """FILE_SOURCE_ROOTS for the platform under test (set before its runtime is built)."""
    root = tmp_path / "sources"
    (root / "acme").mkdir(parents=True)  # a tenant reads only its own folder of each root
    monkeypatch.setenv("FILE_SOURCE_ROOTS", str(root))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    reset_settings()
    return root.resolve()


@pytest.fixture
def integrate(onboard_client: Any) -> Callable[..., None]:
    """Set up a tenant's integration through the HTTP API, as the tenant would."""

    def setup(tenant: str, key: str, provider: str, credential: Any, settings: dict[str, Any]) -> None:
        response = onboard_client.post(
            f"/api/v1/integrations/{tenant}/{provider}/setup",
            headers={"X-API-Key": key},
            json={"credential": credential, "settings": settings},
        )
        assert response.status_code == 200, response.json

    return setup


@pytest.fixture(scope="module")
def service_account() -> dict[str, str]:
    """A tenant's service account key file with a real RSA key, naming an address of the tenant's choosing."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "type": "service_account", "project_id": "acme-billing-4821", "private_key_id": "5f1c0ffee",
        "private_key": pem, "client_email": "cost-reader@acme-billing-4821.iam.gserviceaccount.com",
        "client_id": "104729", "token_uri": "https://collector.attacker.example/token",
        "universe_domain": "attacker.example", "_public_key": public,
    }  # fmt: skip


def key_file(service_account: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in service_account.items() if not k.startswith("_")}


# -- source.files ------------------------------------------------------------------------------------------


@pytest.fixture
def acme(source_root: Path, onboard_org: Callable[[str], str]) -> str:
    return onboard_org("acme")


def test_cur_at_the_aws_integration_location_is_loaded_and_replaced_on_each_run(
    source_root: Path, acme: str, runtime: Runtime, integrate: Callable[..., None]
) -> None:
    folder = source_root / "acme" / "cur" / "2023-11"
    folder.mkdir(parents=True)
    shutil.copy(AWS_SAMPLE, folder / "cur-00001.csv")
    integrate("acme", acme, "aws", AWS_KEY, {"cur_location": str(source_root / "acme" / "cur")})

    first = run_step(runtime, "acme", CUR_STEP)
    second = run_step(runtime, "acme", CUR_STEP)

    assert first.rows_processed == second.rows_processed == 1281
    assert first.details["files"] == 1 and first.details["location"] == str(source_root / "acme" / "cur")
    assert runtime.warehouse.count_rows("acme", "aws_cur_raw") == 1281
    typed = runtime.warehouse.query(
        "SELECT SUM(SAFE_CAST(line_item_unblended_cost AS FLOAT64)) AS cost, COUNT(DISTINCT _source_file) AS files,"
        " COUNTIF(line_item_resource_id IS NULL) AS no_resource FROM `acme`.`aws_cur_raw`"
    )[0]
    assert math.isclose(typed["cost"], AWS_SAMPLE_COST, abs_tol=1e-9)
    assert typed["files"] == 1
    assert typed["no_resource"] == 1281
    assert first.details["columns"] == len(runtime.warehouse.table_columns("acme", "aws_cur_raw"))


def test_source_uri_overrides_the_integration_and_replaces_the_table_whole(
    source_root: Path, acme: str, runtime: Runtime, integrate: Callable[..., None]
) -> None:
    shutil.copy(AWS_SAMPLE, source_root / "acme" / "cur.csv")
    integrate("acme", acme, "aws", AWS_KEY, {"cur_location": str(source_root / "acme" / "cur.csv")})
    assert run_step(runtime, "acme", CUR_STEP).rows_processed == 1281

    folder = source_root / "acme" / "cur2"
    folder.mkdir(parents=True)
    cur2_parquet(folder / "part-00000.snappy.parquet", 40)
    lines = [{"lineItem/UnblendedCost": "0.5", "lineItem/UsageStartDate": "2023-11-05T00:00:00Z"}] * 3
    (folder / "part-00001.ndjson.gz").write_bytes(gzip.compress("\n".join(map(json.dumps, lines)).encode()))
    result = run_step(runtime, "acme", CUR_STEP, {"source_uri": str(folder)})

    assert result.rows_processed == 43
    assert result.details["files"] == 2 and result.details["location"] == str(folder)
    rows = runtime.warehouse.query(
        "SELECT _source_file, COUNT(*) AS n, COUNTIF(line_item_currency_code IS NULL) AS no_currency"
        " FROM `acme`.`aws_cur_raw` GROUP BY _source_file ORDER BY _source_file"
    )
    assert [(Path(r["_source_file"]).name, r["n"], r["no_currency"]) for r in rows] == [
        ("part-00000.snappy.parquet", 40, 0),
        ("part-00001.ndjson.gz", 3, 3),
    ]


@pytest.mark.parametrize(
    ("sample", "required", "rows"),
    [
        (AZURE_SAMPLE, ["cost_in_billing_currency", "billing_currency_code"], 27),
        (FOCUS_SAMPLE, ["billed_cost", "billing_currency", "charge_period_start"], 1000),
    ],
    ids=["azure_ea_export", "focus_1_0"],
)
def test_azure_and_focus_exports_load_from_a_source_uri(
    source_root: Path, acme: str, runtime: Runtime, sample: Path, required: list[str], rows: int
) -> None:
    shutil.copy(sample, source_root / "acme" / sample.name)
    step = {"step_id": "load", "ps_type": "source.files", "table": "export_raw", "uri": "{source_uri}",
            "required_columns": required}  # fmt: skip
    assert (
        run_step(
            runtime, "acme", step, {"source_uri": str(source_root / "acme" / sample.name)}
        ).rows_processed
        == rows
    )
    types = runtime.warehouse.query(
        "SELECT COUNT(*) AS n FROM `acme`.`export_raw` WHERE SAFE_CAST("
        + required[0]
        + " AS FLOAT64) IS NOT NULL"
    )[0]
    assert types["n"] > 0


def test_uri_outside_the_source_roots_is_forbidden_and_keeps_the_loaded_table(
    source_root: Path, acme: str, runtime: Runtime, tmp_path: Path
) -> None:
    shutil.copy(AWS_SAMPLE, source_root / "acme" / "cur.csv")
    step = {**CUR_STEP, "integration": None}
    run_step(runtime, "acme", step, {"source_uri": str(source_root / "acme" / "cur.csv")})
    (tmp_path / "server.csv").write_text("line_item_unblended_cost,line_item_usage_start_date\n9,x\n")
    (source_root / "acme" / "innocent.csv").symlink_to(tmp_path / "server.csv")

    (source_root / "globex").mkdir()
    shutil.copy(AWS_SAMPLE, source_root / "globex" / "their-cur.csv")

    for uri in (
        f"{source_root}/acme/../../server.csv",
        str(source_root / "acme" / "innocent.csv"),
        str(tmp_path / "home"),
        str(source_root / "globex" / "their-cur.csv"),  # another tenant's folder of the same root
        str(source_root),
    ):
        error = failed_step(runtime, "acme", step, {"source_uri": uri})
        assert error.code == "source_forbidden", uri
    assert runtime.warehouse.count_rows("acme", "aws_cur_raw") == 1281


def test_no_uri_no_aws_integration_and_no_uploaded_rows_is_no_source_data(acme: str, runtime: Runtime) -> None:
    error = failed_step(runtime, "acme", CUR_STEP)
    assert error.code == "no_source_data"
    assert "acme has no aws integration and aws_cur_raw holds no rows" in error.message
    assert not runtime.warehouse.table_exists("acme", "aws_cur_raw")


def test_step_with_an_unknown_setting_fails_naming_it_instead_of_crashing(
    acme: str, runtime: Runtime
) -> None:
    error = failed_step(runtime, "acme", {**CUR_STEP, "bucket": "x", "column_names": "camel"})
    assert error.code == "configuration_error"
    assert "bucket" in error.message and "column_names" in error.message


# -- source.files from Cloud Storage -----------------------------------------------------------------------


@pytest.fixture
def gcs_platform(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch, source_root: Path) -> str:
    """Point the platform's settings at the Cloud Storage emulator (before its runtime is built)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    reset_settings()
    return gcs_emulator


@pytest.fixture
def bucket(gcs_emulator: str) -> Iterator[storage.Bucket]:
    client = storage.Client(
        project="test-project",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=gcs_emulator),
    )
    created = client.create_bucket(f"billing-{uuid.uuid4().hex[:12]}")
    yield created
    for blob in client.list_blobs(created.name):
        blob.delete()
    created.delete()


def test_gs_prefix_is_read_file_by_file_from_cloud_storage(
    gcs_platform: str, acme: str, runtime: Runtime, bucket: storage.Bucket, tmp_path: Path
) -> None:
    cur2_parquet(tmp_path / "part.parquet", 50)
    bucket.blob("acme/cur/2023-11/cur-00001.csv.gz").upload_from_string(
        gzip.compress(AWS_SAMPLE.read_bytes())
    )
    bucket.blob("acme/cur/2023-11/cur-00002.snappy.parquet").upload_from_filename(tmp_path / "part.parquet")
    bucket.blob("acme/cur/2023-11/cur-Manifest.json").upload_from_string(b'{"reportKeys": []}')
    bucket.blob("acme/cur-other/x.csv").upload_from_string(b"line_item_unblended_cost\n1\n")
    location = f"gs://{bucket.name}/acme/cur/"

    result = run_step(runtime, "acme", {**CUR_STEP, "integration": None}, {"source_uri": location})

    assert result.rows_processed == 1281 + 50
    assert result.details == {
        "table": "aws_cur_raw",
        "files": 2,
        "columns": result.details["columns"],
        "location": location,
    }
    files = runtime.warehouse.query(
        "SELECT DISTINCT _source_file FROM `acme`.`aws_cur_raw` ORDER BY _source_file"
    )
    assert [r["_source_file"] for r in files] == [
        f"gs://{bucket.name}/acme/cur/2023-11/cur-00001.csv.gz",
        f"gs://{bucket.name}/acme/cur/2023-11/cur-00002.snappy.parquet",
    ]
    cost = runtime.warehouse.query(
        "SELECT SUM(SAFE_CAST(line_item_unblended_cost AS FLOAT64)) AS cost FROM `acme`.`aws_cur_raw`"
    )[0]["cost"]
    assert math.isclose(
        cost,
        AWS_SAMPLE_COST
        + pc.sum(pa_csv.read_csv(AWS_SAMPLE).column("lineItem/UnblendedCost").slice(0, 50)).as_py(),
    )


def test_gs_object_named_directly_and_missing_buckets(
    gcs_platform: str, acme: str, runtime: Runtime, bucket: storage.Bucket
) -> None:
    bucket.blob("azure/export.csv").upload_from_string(AZURE_SAMPLE.read_bytes())
    step = {"step_id": "load", "ps_type": "source.files", "table": "azure_raw", "uri": "{source_uri}"}
    assert (
        run_step(runtime, "acme", step, {"source_uri": f"gs://{bucket.name}/azure/export.csv"}).rows_processed
        == 27
    )

    missing = failed_step(runtime, "acme", step, {"source_uri": f"gs://no-such-{bucket.name}/cur/"})
    assert missing.code == "source_not_found"
    empty = failed_step(runtime, "acme", step, {"source_uri": f"gs://{bucket.name}/nothing-here/"})
    assert empty.code == "source_empty" and f"gs://{bucket.name}/nothing-here/" in empty.message


# -- gcp.billing_export in the platform's own engine -------------------------------------------------------


@pytest.fixture
def exports(onboard_org: Callable[[str], str]) -> dict[str, str]:
    """Two tenants, each with three days of its billing export in a table of its own dataset."""
    return {tenant: onboard_org(tenant) for tenant in ("acme", "globex")}


def load_source_export(rt: Runtime, tenant: str, days: int = 3) -> list[dict[str, Any]]:
    rows = generate_billing_export(tenant, EXPORT_START, days, seed=7)
    schema = load_schema("tenant", "gcp_billing_export_v1").model_copy(update={"name": SOURCE_TABLE})
    rt.warehouse.create_table(tenant, schema)
    rt.warehouse.insert_rows(tenant, SOURCE_TABLE, rows)
    return rows


def test_export_day_is_copied_once_however_often_the_step_runs(
    exports: dict[str, str], runtime: Runtime, integrate: Callable[..., None], service_account: dict[str, str]
) -> None:
    rows = load_source_export(runtime, "acme")
    expected = daily_totals(rows)
    integrate("acme", exports["acme"], "gcp", key_file(service_account),
              {"billing_export_table": f"local-project.acme.{SOURCE_TABLE}"})  # fmt: skip

    first = run_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})
    again = run_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})
    run_step(runtime, "acme", EXPORT_STEP, {"date": EXPORT_START.isoformat()})

    day_rows = sum(1 for r in rows if r["usage_start_time"].date() == DAY)
    assert first.rows_processed == again.rows_processed == day_rows == 43
    assert first.details["copied"] is True and again.details["rows_replaced"] == day_rows
    assert day_totals(runtime, "acme", "gcp_billing_export_v1", DAY) == (day_rows, expected[DAY]["cost"])
    assert (
        day_totals(runtime, "acme", "gcp_billing_export_v1", EXPORT_START)[1]
        == expected[EXPORT_START]["cost"]
    )
    assert runtime.warehouse.count_rows("acme", "gcp_billing_export_v1") == 2 * day_rows
    credits = runtime.warehouse.query(
        "SELECT SUM((SELECT SUM(c.amount) FROM UNNEST(credits) AS c)) AS credits FROM `acme`.`gcp_billing_export_v1`"
        " WHERE DATE(usage_start_time) = @date",
        {"date": DAY},
    )[0]["credits"]
    assert math.isclose(credits, expected[DAY]["credits"], abs_tol=1e-6)


def test_rerun_after_the_export_changed_replaces_the_day_with_the_new_rows(
    exports: dict[str, str], runtime: Runtime, integrate: Callable[..., None], service_account: dict[str, str]
) -> None:
    load_source_export(runtime, "acme")
    integrate("acme", exports["acme"], "gcp", key_file(service_account),
              {"billing_export_table": f"local-project.acme.{SOURCE_TABLE}"})  # fmt: skip
    run_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})
    runtime.warehouse.execute(
        f"DELETE FROM {table_ref('acme', SOURCE_TABLE)} WHERE cost_type != 'regular'"
        " AND DATE(usage_start_time) = @date",
        {"date": DAY},
    )

    result = run_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})

    assert result.rows_processed == 40
    assert day_totals(runtime, "acme", "gcp_billing_export_v1", DAY) == day_totals(
        runtime, "acme", SOURCE_TABLE, DAY
    )


@pytest.mark.parametrize(
    "source",
    [
        f"local-project.globex.{SOURCE_TABLE}",
        "local-project.organizations.org_api_keys",
        f"another-project.acme.{SOURCE_TABLE}",
    ],
    ids=["another_tenant", "control_dataset", "another_project"],
)
def test_export_outside_the_tenants_own_dataset_is_forbidden(
    exports: dict[str, str], runtime: Runtime, integrate: Callable[..., None], service_account: dict[str, str],
    source: str,
) -> None:  # fmt: skip
    load_source_export(runtime, "globex")
    integrate("acme", exports["acme"], "gcp", key_file(service_account), {"billing_export_table": source})

    error = failed_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})

    assert error.code == "source_forbidden"
    assert runtime.warehouse.count_rows("acme", "gcp_billing_export_v1") == 0


def test_older_export_without_the_newer_columns_is_copied_with_them_null(
    exports: dict[str, str], runtime: Runtime, integrate: Callable[..., None], service_account: dict[str, str]
) -> None:
    newer = {"tags", "cost_at_list", "transaction_type", "seller_name"}
    full = load_schema("tenant", "gcp_billing_export_v1")
    older = full.model_copy(
        update={"name": SOURCE_TABLE, "fields": [f for f in full.fields if f.name not in newer]}
    )
    runtime.warehouse.create_table("acme", older)
    rows = [
        {k: v for k, v in r.items() if k not in newer}
        for r in generate_billing_export("acme", DAY, 1, seed=3)
    ]
    runtime.warehouse.insert_rows("acme", SOURCE_TABLE, rows)
    integrate("acme", exports["acme"], "gcp", key_file(service_account),
              {"billing_export_table": f"local-project.acme.{SOURCE_TABLE}"})  # fmt: skip

    assert run_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()}).rows_processed == 43
    copied = runtime.warehouse.query(
        "SELECT COUNT(*) AS n, COUNTIF(cost_at_list IS NULL AND seller_name IS NULL) AS without,"
        " SUM(IFNULL(ARRAY_LENGTH(tags), 0)) AS tags FROM `acme`.`gcp_billing_export_v1`"
    )[0]
    assert copied == {"n": 43, "without": 43, "tags": 0}

    runtime.warehouse.execute(f"DROP TABLE {table_ref('acme', SOURCE_TABLE)}")
    runtime.warehouse.load_arrow(
        "acme", SOURCE_TABLE, pa.table({"usage_start_time": ["2024-05-02"], "cost": [1.0]})
    )
    error = failed_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})
    assert error.code == "source_schema_mismatch"
    assert "billing_account_id" in error.message


def test_export_that_is_the_destination_itself_is_counted_not_copied(
    exports: dict[str, str], runtime: Runtime, integrate: Callable[..., None], service_account: dict[str, str]
) -> None:
    rows = generate_billing_export("acme", EXPORT_START, 3, seed=7)
    runtime.warehouse.create_table("acme", load_schema("tenant", "gcp_billing_export_v1"))
    runtime.warehouse.insert_rows("acme", "gcp_billing_export_v1", rows)
    integrate("acme", exports["acme"], "gcp", key_file(service_account),
              {"billing_export_table": "local-project.acme.gcp_billing_export_v1"})  # fmt: skip

    result = run_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})

    assert result.rows_processed == 43
    assert result.details["copied"] is False
    assert runtime.warehouse.count_rows("acme", "gcp_billing_export_v1") == len(rows)


def test_missing_export_table_or_integration_fails_the_step_clearly(
    exports: dict[str, str], runtime: Runtime, integrate: Callable[..., None], service_account: dict[str, str]
) -> None:
    assert failed_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()}).code == "no_source_data"
    integrate("acme", exports["acme"], "gcp", key_file(service_account),
              {"billing_export_table": "local-project.acme.gcp_billing_export_v1_0123AB_456789_ABCDEF"})  # fmt: skip
    error = failed_step(runtime, "acme", EXPORT_STEP, {"date": DAY.isoformat()})
    assert error.code == "source_not_found"
    assert "gcp_billing_export_v1_0123AB_456789_ABCDEF" in error.message


# -- gcp.billing_export on the BigQuery emulator -----------------------------------------------------------


@pytest.fixture
def bigquery_runtime(bigquery_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The platform on bqemulator, in a project of its own, with the control table integrations need."""
    monkeypatch.setenv("CONVERGENCE_WAREHOUSE", "bigquery")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator)
    monkeypatch.setenv("GCP_PROJECT_ID", f"conv-{uuid.uuid4().hex[:10]}")
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    rt.warehouse.create_dataset(rt.settings.control_dataset)
    rt.warehouse.create_table(
        rt.settings.control_dataset, load_schema("control", "org_integration_credentials")
    )
    rt.warehouse.create_dataset("acme")
    return rt


def test_cur_load_on_the_bigquery_emulator_lands_the_same_rows(
    source_root: Path, bigquery_runtime: Runtime
) -> None:
    shutil.copy(AWS_SAMPLE, source_root / "acme" / "cur.csv")
    step = {**CUR_STEP, "integration": None}
    for _ in range(2):
        result = run_step(
            bigquery_runtime, "acme", step, {"source_uri": str(source_root / "acme" / "cur.csv")}
        )
        assert result.rows_processed == 1281
    assert bigquery_runtime.warehouse.count_rows("acme", "aws_cur_raw") == 1281
    cost = bigquery_runtime.warehouse.query(
        "SELECT SUM(SAFE_CAST(line_item_unblended_cost AS FLOAT64)) AS cost FROM `acme`.`aws_cur_raw`"
    )[0]["cost"]
    assert math.isclose(cost, AWS_SAMPLE_COST, abs_tol=1e-9)


def test_export_day_copy_on_the_bigquery_emulator_is_idempotent(
    bigquery_runtime: Runtime, service_account: dict[str, str]
) -> None:
    rt = bigquery_runtime
    rows = load_source_export(rt, "acme", days=2)
    request = IntegrationSetupRequest(
        credential=key_file(service_account),
        settings={"billing_export_table": f"{rt.settings.gcp_project_id}.acme.{SOURCE_TABLE}"},
    )
    setup_integration(rt, "acme", "gcp", request)

    first = run_step(rt, "acme", EXPORT_STEP, {"date": DAY.isoformat()})
    again = run_step(rt, "acme", EXPORT_STEP, {"date": DAY.isoformat()})

    assert first.rows_processed == again.rows_processed == 43
    assert day_totals(rt, "acme", "gcp_billing_export_v1", DAY) == (43, daily_totals(rows)[DAY]["cost"])
    assert rt.warehouse.count_rows("acme", "gcp_billing_export_v1") == 43


# -- the Google Cloud path, up to the network --------------------------------------------------------------


def test_tenant_credentials_are_its_service_account_and_only_ever_ask_google_for_a_token(
    service_account: dict[str, str],
) -> None:
    credentials = service_account_credentials(key_file(service_account))
    sent: list[dict[str, Any]] = []

    def offline_transport(
        url: str, method: str = "GET", body: Any = None, headers: Any = None, **_: Any
    ) -> Any:
        # Stands in for the network: records where the token request would go, and sends nothing.
        sent.append({"url": url, "method": method, "body": body})
        raise auth_exceptions.TransportError("offline")

    with pytest.raises(auth_exceptions.GoogleAuthError):
        credentials.refresh(offline_transport)

    assert credentials.service_account_email == service_account["client_email"]
    assert credentials.project_id == service_account["project_id"]
    assert credentials.universe_domain == "googleapis.com"
    assert [(s["url"], s["method"]) for s in sent] == [(GOOGLE_TOKEN_URI, "POST")]
    body = sent[0]["body"].decode() if isinstance(sent[0]["body"], bytes) else sent[0]["body"]
    assertion = dict(part.split("=", 1) for part in body.split("&"))["assertion"]
    claims = jwt.decode(
        assertion, certs={"5f1c0ffee": service_account["_public_key"]}, audience=GOOGLE_TOKEN_URI
    )
    assert claims["iss"] == service_account["client_email"]
    assert claims["scope"] == READ_ONLY_SCOPE


def test_tenant_bigquery_client_runs_in_the_tenants_project(service_account: dict[str, str]) -> None:
    client = tenant_bigquery_client(key_file(service_account))
    try:
        assert client.project == "acme-billing-4821"
        assert client._credentials.service_account_email == service_account["client_email"]
    finally:
        client.close()


def test_unusable_service_account_key_is_invalid_credential_without_echoing_it() -> None:
    with pytest.raises(TerminalError) as caught:
        service_account_credentials({"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
                                     "private_key": "-----BEGIN PRIVATE KEY-----\nnot-a-key\n"})  # fmt: skip
    assert caught.value.code == "invalid_credential"
    assert "not-a-key" not in caught.value.message


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [
        (gexc.ServiceUnavailable("backend down"), "transient"),
        (gexc.Forbidden("quota", errors=[{"reason": "rateLimitExceeded"}]), "transient"),
        (auth_exceptions.TransportError("connection reset"), "transient"),
        (gexc.Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]), "source_forbidden"),
        (gexc.NotFound("Not found: Table"), "source_not_found"),
        (auth_exceptions.RefreshError("invalid_grant: account not found"), "invalid_credential"),
    ],
    ids=["5xx", "rate_limit", "network", "access_denied", "missing_table", "revoked_key"],
)
def test_failures_reading_the_tenant_project_are_retried_only_when_retrying_can_help(
    failure: Exception, outcome: str
) -> None:
    source = ExportTable("acme-billing-4821", "billing", "gcp_billing_export_v1_0123AB_456789_ABCDEF")
    with pytest.raises((TransientError, TerminalError)) as caught, tenant_project_errors(source):
        raise failure
    if outcome == "transient":
        assert isinstance(caught.value, TransientError)
    else:
        assert isinstance(caught.value, TerminalError) and caught.value.code == outcome


def test_day_query_reads_one_utc_day_through_parameters() -> None:
    source = ExportTable("acme-billing-4821", "billing", "gcp_billing_export_v1_0123AB_456789_ABCDEF")
    sql, params = day_query(source, ["usage_start_time", "cost"], DAY)
    assert "@day_start" in sql and "@day_end" in sql
    assert "2024" not in sql and "'" not in sql
    assert "`acme-billing-4821`.`billing`.`gcp_billing_export_v1_0123AB_456789_ABCDEF`" in sql
    assert {(p.name, p.type_, p.value) for p in params} == {
        ("day_start", "TIMESTAMP", dt.datetime(2024, 5, 2, tzinfo=dt.UTC)),
        ("day_end", "TIMESTAMP", dt.datetime(2024, 5, 3, tzinfo=dt.UTC)),
    }


def test_copy_from_a_tenant_project_reads_only_the_day_and_lands_it_atomically(
    bigquery_emulator: str, runtime: Runtime, onboard_org: Callable[[str], str]
) -> None:
    """The tenant's project is played by the BigQuery emulator; the platform's warehouse is DuckDB."""
    onboard_org("acme")
    project = f"acme-billing-{uuid.uuid4().hex[:8]}"
    tenant_side = BigQueryWarehouse(project, "US", emulator_host=bigquery_emulator)
    rows = generate_billing_export("acme", EXPORT_START, 3, seed=11)
    export = "gcp_billing_export_v1_0123AB_456789_ABCDEF"
    tenant_side.create_dataset("billing")
    tenant_side.create_table(
        "billing", load_schema("tenant", "gcp_billing_export_v1").model_copy(update={"name": export})
    )
    tenant_side.insert_rows("billing", export, rows)
    client = bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bigquery_emulator),
    )
    schema = load_schema("tenant", "gcp_billing_export_v1")
    runtime.warehouse.create_table("acme", schema)
    source = ExportTable(project, "billing", export)

    first = copy_from_tenant_project(runtime.warehouse, "acme", schema, source, DAY, client)
    again = copy_from_tenant_project(runtime.warehouse, "acme", schema, source, DAY, client)

    assert first.rows == again.rows == 43
    assert day_totals(runtime, "acme", "gcp_billing_export_v1", DAY) == (43, daily_totals(rows)[DAY]["cost"])
    assert runtime.warehouse.count_rows("acme", "gcp_billing_export_v1") == 43
    assert not [t for t in runtime.warehouse.list_tables("acme") if "staging" in t]
    labels = runtime.warehouse.query(
        "SELECT SUM(ARRAY_LENGTH(labels)) AS n FROM `acme`.`gcp_billing_export_v1`"
    )[0]["n"]
    assert labels == sum(len(r["labels"]) for r in rows if r["usage_start_time"].date() == DAY)
    client.close()
    tenant_side.close()
