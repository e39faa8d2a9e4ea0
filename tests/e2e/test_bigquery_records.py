"""What the platform leaves in BigQuery beyond the rows (bqemulator): tenant datasets carry `tenant=<id>`, and
step records carry the bytes BigQuery reported processing (null on DuckDB, which reports none)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from common.metadata.schemas import load_schema
from common.warehouse.bigquery import BigQueryWarehouse
from common.warehouse.sql import table_ref
from common.wiring import set_runtime
from convergence.demo.gcp_billing import generate_billing_export
from tests.conftest import wait_for_bus
from tests.e2e.cost_support import GCP_DAYS, Platform, platform_runtime


@pytest.fixture(scope="module")
def _platform(tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: str) -> Iterator[Platform]:
    env = {
        "CONVERGENCE_WAREHOUSE": "bigquery",
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
        "GCP_PROJECT_ID": f"records-{uuid.uuid4().hex[:10]}",
    }
    rt = platform_runtime(tmp_path_factory.mktemp("platform") / "home", env)
    assert isinstance(rt.warehouse, BigQueryWarehouse)
    try:
        platform = Platform(rt, tmp_path_factory.mktemp("sources"))
        for org in ("acme", "globex"):
            platform.add_tenant(org)
        yield platform
    finally:
        set_runtime(None)
        rt.close()


@pytest.fixture
def platform(_platform: Platform, clean_environment: None) -> Iterator[Platform]:
    """The module's platform, installed as the runtime the functions use during this test."""
    set_runtime(_platform.rt)
    yield _platform
    set_runtime(None)


def test_each_tenant_dataset_is_labelled_with_its_tenant(platform: Platform) -> None:
    warehouse = platform.rt.warehouse
    assert isinstance(warehouse, BigQueryWarehouse)

    assert warehouse.dataset_labels("acme") == {"tenant": "acme"}
    assert warehouse.dataset_labels("globex") == {"tenant": "globex"}
    assert "tenant" not in warehouse.dataset_labels(platform.rt.settings.control_dataset)


def run_cost_billing(rt, client, headers, org: str) -> dict:
    rows = generate_billing_export(org, GCP_DAYS[0], 1)
    rt.warehouse.create_table(org, load_schema("tenant", "gcp_billing_export_v1"))
    rt.warehouse.insert_rows(org, "gcp_billing_export_v1", rows)
    accepted = client.post(f"/api/v1/pipelines/run/{org}/gcp/cost/cost_billing", headers=headers,
                           json={"date": GCP_DAYS[0].isoformat()})  # fmt: skip
    assert accepted.status_code == 202, accepted.json
    wait_for_bus(rt)
    run = client.get(f"/api/v1/pipelines/runs/{accepted.json['pipeline_logging_id']}", headers=headers).json
    assert run["status"] == "COMPLETE", run["error_message"]
    return run


def test_each_step_that_queries_records_the_bytes_bigquery_processed(platform: Platform) -> None:
    run = run_cost_billing(platform.rt, platform.trigger, platform.keys["acme"], "acme")

    steps = {s["step_id"]: s for s in run["steps"]}
    # bqemulator reports 0 bytes for every job; BigQuery reports what it scanned. Null would mean not recorded.
    assert steps["daily_cost"]["bytes_processed"] is not None and steps["daily_cost"]["bytes_processed"] >= 0
    assert steps["quality"]["bytes_processed"] is not None
    assert steps["notify_failure"]["bytes_processed"] is None, "a skipped step ran nothing"
    recorded = platform.query(
        f"SELECT step_id, bytes_processed FROM {table_ref('acme', 'step_logs')}"
        " WHERE pipeline_logging_id = @run AND status = 'COMPLETE'",
        {"run": run["pipeline_logging_id"]},
    )
    assert {r["step_id"]: r["bytes_processed"] for r in recorded} == {
        step_id: steps[step_id]["bytes_processed"] for step_id in ("copy_export", "daily_cost", "quality")
    }


def test_on_duckdb_step_records_leave_bytes_processed_null(runtime, trigger_client, two_tenants) -> None:
    run = run_cost_billing(runtime, trigger_client, two_tenants["acme"], "acme")

    assert [s["bytes_processed"] for s in run["steps"]] == [None, None, None, None]


def test_a_tenant_onboarded_before_these_columns_existed_runs_and_gains_them(
    runtime, trigger_client, two_tenants
) -> None:
    """step_logs without bytes_processed and pipeline_runs without bulk_id (an older release's tables)."""
    for table, column in (("step_logs", "bytes_processed"), ("pipeline_runs", "bulk_id")):
        runtime.warehouse.execute(f"ALTER TABLE {table_ref('acme', table)} DROP COLUMN {column}")
        assert column not in runtime.warehouse.table_columns("acme", table)

    run = run_cost_billing(runtime, trigger_client, two_tenants["acme"], "acme")

    assert [s["status"] for s in run["steps"]] == ["COMPLETE", "COMPLETE", "COMPLETE", "SKIPPED"]
    assert "bytes_processed" in runtime.warehouse.table_columns("acme", "step_logs")
    assert "bulk_id" in runtime.warehouse.table_columns("acme", "pipeline_runs")
    assert "bytes_processed" in runtime.warehouse.table_columns("globex", "step_logs"), "untouched, current"


def test_a_runs_records_reach_bigquery_through_the_storage_write_api_with_no_load_job(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = platform.rt.warehouse
    assert isinstance(warehouse, BigQueryWarehouse)
    loads: list[str] = []
    appends: list[str] = []
    load, append = warehouse._load, warehouse.writer.append
    monkeypatch.setattr(warehouse, "_load", lambda ref, *a: loads.append(ref.table_id) or load(ref, *a))
    monkeypatch.setattr(
        warehouse.writer, "append", lambda ref, b: appends.append(ref.table_id) or append(ref, b)
    )
    rows = generate_billing_export("globex", GCP_DAYS[0], 1)
    warehouse.create_table("globex", load_schema("tenant", "gcp_billing_export_v1"))
    warehouse.insert_rows("globex", "gcp_billing_export_v1", rows)  # nested columns: one load job
    assert loads == ["gcp_billing_export_v1"]
    loads.clear()

    headers = platform.keys["globex"]
    accepted = platform.trigger.post("/api/v1/pipelines/run/globex/gcp/cost/cost_billing", headers=headers,
                                     json={"date": GCP_DAYS[0].isoformat()})  # fmt: skip
    assert accepted.status_code == 202, accepted.json
    wait_for_bus(platform.rt)
    run_id = accepted.json["pipeline_logging_id"]
    run = platform.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers).json

    assert run["status"] == "COMPLETE", run["error_message"]
    assert [s["status"] for s in run["steps"]] == ["COMPLETE", "COMPLETE", "COMPLETE", "SKIPPED"]
    assert loads == [], "records must not be load jobs"
    assert {"pipeline_runs", "step_logs", "dq_results"} <= set(appends)
    assert appends.count("pipeline_runs") == 3  # PENDING, RUNNING, COMPLETE
    checks = platform.query(
        f"SELECT check_name, status FROM {table_ref('globex', 'dq_results')} WHERE pipeline_logging_id = @run",
        {"run": run_id},
    )
    assert checks and all(c["status"] == "PASS" for c in checks)
