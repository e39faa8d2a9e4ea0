"""The deployed topology on one machine: separate function processes, the Pub/Sub emulator with push
subscriptions (steps → step_execute, schedules → trigger_schedules, dead-letter → step_execute) and the
BigQuery adapter on bqemulator. Everything crosses real HTTP and real Pub/Sub."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from pydantic import SecretStr

from common.metadata.schemas import load_schema
from common.settings import Settings
from common.warehouse.bigquery import BigQueryWarehouse
from common.warehouse.sql import table_ref
from convergence.demo.gcp_billing import daily_totals, generate_billing_export
from convergence.emulators.process import free_port
from convergence.local_stack import LocalStack

ROOT = "topology-root-key-0123456789"
DAY = dt.date(2024, 5, 2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("topology")
    settings = Settings(convergence_home=home, ca_root_api_key=SecretStr(ROOT), step_max_attempts=5)
    # Notifications go to an SMTP port nobody listens on: sending fails transiently, every time.
    smtp = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()), "SMTP_STARTTLS": "false"}
    local = LocalStack(settings, ROOT, extra_env=smtp).start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def acme(stack):
    root = {"X-CA-Root-Key": ROOT}
    onboard = stack.endpoints["onboard"]
    assert httpx.post(f"{onboard}/api/v1/admin/bootstrap", headers=root, json={}, timeout=120).status_code == 200
    body = {"org_slug": "acme", "company_name": "Acme", "admin_email": "finops@acme.example.com"}
    response = httpx.post(f"{onboard}/api/v1/organizations/onboard", headers=root, json=body, timeout=120)
    assert response.status_code == 201, response.text
    assert response.json()["dryrun_status"] == "COMPLETE"
    return {"X-API-Key": response.json()["api_key"]}


def _wait_for_run(stack, headers, run_id, timeout):
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{stack.endpoints['trigger']}/api/v1/pipelines/runs/{run_id}", headers=headers, timeout=30)
        assert run.status_code == 200, run.text
        if run.json()["status"] in ("COMPLETE", "FAILED") or time.monotonic() > deadline:
            return run.json()
        time.sleep(0.5)


def _warehouse(stack) -> BigQueryWarehouse:
    return BigQueryWarehouse(
        stack.settings.gcp_project_id, stack.settings.bigquery_location, stack.env["BIGQUERY_EMULATOR_HOST"]
    )


def test_onboard_then_run_completes_over_http_and_pubsub(stack, acme):
    rows = generate_billing_export("acme", DAY, 1, seed=7)
    warehouse = _warehouse(stack)
    warehouse.create_table("acme", load_schema("tenant", "gcp_billing_export_v1"))
    warehouse.insert_rows("acme", "gcp_billing_export_v1", rows)

    accepted = httpx.post(
        f"{stack.endpoints['trigger']}/api/v1/pipelines/run/acme/gcp/cost/cost_billing",
        headers=acme, json={"date": DAY.isoformat()}, timeout=60,
    )  # fmt: skip
    assert accepted.status_code == 202, accepted.text
    run = _wait_for_run(stack, acme, accepted.json()["pipeline_logging_id"], timeout=120)
    assert run["status"] == "COMPLETE", run
    assert [s["status"] for s in run["steps"]] == ["COMPLETE", "COMPLETE", "COMPLETE", "SKIPPED"]
    totals = warehouse.query(
        f"SELECT SUM(cost) AS cost, SUM(credits) AS credits FROM {table_ref('acme', 'billing_cost_daily')}"
        " WHERE usage_date = @day",
        {"day": DAY},
    )[0]
    expected = daily_totals(rows)[DAY]
    assert totals["cost"] == pytest.approx(expected["cost"], abs=1e-6)
    assert totals["credits"] == pytest.approx(expected["credits"], abs=1e-6)


def test_a_step_failing_transiently_is_dead_lettered_and_fails_the_run(stack, acme):
    warehouse = _warehouse(stack)
    warehouse.create_table("acme", load_schema("tenant", "gcp_billing_export_v1"))
    warehouse.insert_rows("acme", "gcp_billing_export_v1", generate_billing_export("acme", dt.date(2024, 5, 3), 1))
    accepted = httpx.post(
        f"{stack.endpoints['trigger']}/api/v1/pipelines/run/acme/gcp/cost/cost_billing",
        headers=acme, json={"date": "2024-05-03", "min_rows": 1000}, timeout=60,
    )  # fmt: skip
    assert accepted.status_code == 202, accepted.text
    run = _wait_for_run(stack, acme, accepted.json()["pipeline_logging_id"], timeout=240)
    assert run["status"] == "FAILED", run
    steps = {s["step_id"]: s for s in run["steps"]}
    assert steps["quality"]["status"] == "FAILED"
    notify = steps["notify_failure"]
    assert notify["status"] == "FAILED"
    assert "delivery attempts" in notify["error_message"] and "SMTP" in notify["error_message"]
    assert "notify_failure" in run["error_message"] and "min_rows" in run["error_message"]


def test_a_schedules_message_starts_runs_through_trigger_schedules(stack, acme):
    from common.bus.messages import ScheduleMessage
    from common.bus.pubsub import PubSubBus

    bus = PubSubBus(stack.settings.gcp_project_id, emulator_host=stack.env["PUBSUB_EMULATOR_HOST"])
    try:
        bus.publish(
            stack.settings.schedules_topic,
            ScheduleMessage(template="gcp/example/dryrun", tenants=["acme"], parameters={"date": "2024-05-04"}),
        )
    finally:
        bus.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = httpx.get(f"{stack.endpoints['trigger']}/api/v1/pipelines/runs", headers=acme, timeout=30).json()["runs"]
        scheduled = [r for r in runs if r["trigger_type"] == "schedule"]
        if scheduled and scheduled[0]["status"] in ("COMPLETE", "FAILED"):
            break
        time.sleep(0.5)
    assert scheduled and scheduled[0]["status"] == "COMPLETE", runs
    assert scheduled[0]["parameters"]["date"] == "2024-05-04"
