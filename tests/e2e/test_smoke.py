"""A first end-to-end pass through the two HTTP functions and the bus."""

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq

from convergence.demo.gcp_billing import generate_billing_export
from tests.conftest import wait_for_bus

DAY = dt.date(2024, 5, 1)


def run_cost_billing(client, headers) -> str:
    accepted = client.post("/api/v1/pipelines/run/acme/gcp/cost/cost_billing", headers=headers,
                           json={"date": DAY.isoformat()})  # fmt: skip
    assert accepted.status_code == 202, accepted.json
    return accepted.json["pipeline_logging_id"]


def test_onboarded_tenant_uploads_its_export_and_runs_cost_billing_to_complete(
    runtime, trigger_client, two_tenants
):
    acme = two_tenants["acme"]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(generate_billing_export("acme", DAY, 1)), buffer)
    uploaded = trigger_client.post(
        "/api/v1/data/acme/uploads/gcp_billing_export_v1", data=buffer.getvalue(),
        headers=acme | {"Content-Type": "application/vnd.apache.parquet"},
    )  # fmt: skip
    assert uploaded.status_code == 201, uploaded.json

    run_id = run_cost_billing(trigger_client, acme)
    wait_for_bus(runtime)
    run = trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme)
    assert run.status_code == 200
    assert run.json["status"] == "COMPLETE", run.json["error_message"]
    assert [s["status"] for s in run.json["steps"]] == ["COMPLETE", "COMPLETE", "COMPLETE", "SKIPPED"]
    assert run.json["steps"][0]["rows_processed"] == uploaded.json["rows_loaded"]


def test_tenant_without_export_or_integration_gets_a_failed_run_saying_how_to_provide_the_data(
    runtime, trigger_client, two_tenants
):
    acme = two_tenants["acme"]
    run_id = run_cost_billing(trigger_client, acme)
    wait_for_bus(runtime)
    run = trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme).json

    assert run["status"] == "FAILED"
    assert "/api/v1/integrations/acme/gcp/setup" in run["error_message"]
    assert "/api/v1/data/acme/uploads/gcp_billing_export_v1" in run["error_message"]
    assert [s["status"] for s in run["steps"]][:3] == ["FAILED", "SKIPPED", "SKIPPED"]
