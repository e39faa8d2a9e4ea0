"""Run semantics end to end: the trigger function starts a run, the bus drives its steps.

Pub/Sub delivers at least once, so these tests inject what it does in production: duplicate deliveries,
transient failures, retries, dead-lettering and garbage on the steps topic.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from common.bus.messages import StepMessage, encode
from common.errors import TransientError
from common.metadata.schemas import load_schema
from common.processors import registry
from common.runtime import Runtime
from common.services import execution
from common.settings import reset_settings
from common.warehouse.sql import table_ref
from common.wiring import build_local_bus
from convergence.demo.gcp_billing import daily_totals, generate_billing_export
from tests.conftest import wait_for_bus

DAY = dt.date(2024, 5, 1)
BEFORE, AFTER = DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=1)
UTC = dt.UTC
STEP_IDS = ["copy_export", "daily_cost", "quality", "notify_failure"]
RUN_PATH = "/api/v1/pipelines/run/{tenant}/gcp/cost/cost_billing"


# -- helpers -----------------------------------------------------------------------------------------
def load_export(rt: Runtime, tenant: str, rows: list[dict[str, Any]]) -> None:
    """Put billing export rows into the tenant's gcp_billing_export_v1 (created from its schema)."""
    rt.warehouse.create_table(tenant, load_schema("tenant", "gcp_billing_export_v1"))
    rt.warehouse.insert_rows(tenant, "gcp_billing_export_v1", rows)


def start_run(client: Any, headers: dict[str, str], tenant: str, **body: Any) -> str:
    accepted = client.post(
        RUN_PATH.format(tenant=tenant), headers=headers, json={"date": DAY.isoformat()} | body
    )
    assert accepted.status_code == 202, accepted.json
    assert accepted.json["status"] == "PENDING"
    return accepted.json["pipeline_logging_id"]


def get_run(client: Any, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def rows_of(
    rt: Runtime, tenant: str, table: str, where: str = "TRUE", params: dict | None = None
) -> list[dict]:
    return rt.warehouse.query(f"SELECT * FROM {table_ref(tenant, table)} WHERE {where}", params or {})


def run_records(rt: Runtime, tenant: str, run_id: str) -> list[dict[str, Any]]:
    return rows_of(rt, tenant, "pipeline_runs", "pipeline_logging_id = @run ORDER BY seq", {"run": run_id})


def step_records(rt: Runtime, tenant: str, run_id: str) -> list[dict[str, Any]]:
    return rows_of(rt, tenant, "step_logs", "pipeline_logging_id = @run ORDER BY seq", {"run": run_id})


def latest_steps(rt: Runtime, tenant: str, run_id: str) -> dict[int, dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for record in step_records(rt, tenant, run_id):
        latest[int(record["step_index"])] = record
    return latest


def at_instant(template: dict[str, Any], instant: dt.datetime, cost: float) -> dict[str, Any]:
    """A copy of an export row that started at `instant` (any UTC offset) and cost `cost`."""
    row = copy.deepcopy(template)
    row["usage_start_time"] = instant
    row["usage_end_time"] = instant + dt.timedelta(hours=1)
    row["cost"] = cost
    return row


def rows_around_midnights(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows on both sides of DAY's UTC midnights, several written in non-UTC offsets whose local date differs."""
    template = next(r for r in rows if r["usage_start_time"].date() == DAY and r["credits"])
    plus2, minus5, plus9 = (dt.timezone(dt.timedelta(hours=h)) for h in (2, -5, 9))
    last_us_before = dt.datetime(BEFORE.year, BEFORE.month, BEFORE.day, 23, 59, 59, 999999, tzinfo=UTC)
    midnight = dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    next_midnight = midnight + dt.timedelta(days=1)
    return [
        # written with a local date of DAY, but the instant is in BEFORE
        at_instant(template, last_us_before.astimezone(plus2), 101.000001),
        # written with a local date of BEFORE, but the instant is DAY's first
        at_instant(template, midnight.astimezone(minus5), 202.000002),
        # DAY's last microsecond
        at_instant(template, next_midnight - dt.timedelta(microseconds=1), 303.000003),
        # AFTER's first instant, written with an offset
        at_instant(template, next_midnight.astimezone(plus9), 404.000004),
    ]


def assert_day_matches_export(rt: Runtime, tenant: str, day: dt.date, totals: dict[str, float]) -> list[dict]:
    output = rows_of(rt, tenant, "billing_cost_daily", "usage_date = @day", {"day": day})
    assert output, f"no billing_cost_daily rows for {day}"
    assert math.isclose(math.fsum(r["cost"] for r in output), totals["cost"], abs_tol=1e-6)
    assert math.isclose(math.fsum(r["credits"] for r in output), totals["credits"], abs_tol=1e-6)
    for row in output:
        assert math.isclose(row["net_cost"], row["cost"] + row["credits"], abs_tol=1e-6), row
    return output


def daily_rows(rows: list[dict[str, Any]], day: dt.date) -> int:
    """Export rows whose usage starts in `day` (UTC)."""
    return sum(r["usage_start_time"].astimezone(UTC).date() == day for r in rows)


def outbox(tenant: str) -> Path:
    return Path(os.environ["CONVERGENCE_HOME"]) / "outbox" / tenant


def comparable(rows: list[dict[str, Any]], drop: set[str]) -> list[tuple]:
    """Rows without run ids and clocks, as a sorted list of tuples."""
    return sorted(tuple(sorted((k, repr(v)) for k, v in r.items() if k not in drop)) for r in rows)


@pytest.fixture
def acme(two_tenants: dict[str, dict[str, str]]) -> dict[str, str]:
    return two_tenants["acme"]


@pytest.fixture
def loaded_acme(runtime: Runtime, acme: dict[str, str]) -> list[dict[str, Any]]:
    """Three days of acme's billing export around DAY, with extra rows on both sides of each UTC midnight."""
    rows = generate_billing_export("acme", BEFORE, 3)
    rows += rows_around_midnights(rows)
    load_export(runtime, "acme", rows)
    return rows


def replace_bus(rt: Runtime, **options: Any) -> Any:
    """Swap in a bus wired like the deployed topology but with injected faults; close the old one."""
    old, rt.bus = rt.bus, build_local_bus(rt.settings, **options)
    old.close()
    return rt.bus


def max_attempts(monkeypatch: pytest.MonkeyPatch, attempts: int) -> int:
    """Set STEP_MAX_ATTEMPTS before the runtime is built (list the fixture before `runtime`)."""
    monkeypatch.setenv("STEP_MAX_ATTEMPTS", str(attempts))
    reset_settings()
    return attempts


@pytest.fixture
def three_attempts(monkeypatch: pytest.MonkeyPatch) -> int:
    return max_attempts(monkeypatch, 3)


@pytest.fixture
def fifteen_attempts(monkeypatch: pytest.MonkeyPatch) -> int:
    return max_attempts(monkeypatch, 15)


# -- cost_billing end to end -------------------------------------------------------------------------
def test_cost_billing_day_matches_export_totals_with_rows_in_their_utc_day(
    runtime, trigger_client, acme, loaded_acme
):
    run_ids = {
        day: start_run(trigger_client, acme, "acme", date=day.isoformat()) for day in (BEFORE, DAY, AFTER)
    }
    wait_for_bus(runtime)

    totals = daily_totals(loaded_acme)
    assert set(totals) == {BEFORE, DAY, AFTER}
    for day, run_id in run_ids.items():
        assert get_run(trigger_client, acme, run_id)["status"] == "COMPLETE"
        assert_day_matches_export(runtime, "acme", day, totals[day])
    all_days = {r["usage_date"] for r in rows_of(runtime, "acme", "billing_cost_daily")}
    assert all_days == {BEFORE, DAY, AFTER}


def test_cost_billing_run_writes_only_its_day(runtime, trigger_client, acme, loaded_acme):
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    output = assert_day_matches_export(runtime, "acme", DAY, daily_totals(loaded_acme)[DAY])
    assert {r["usage_date"] for r in rows_of(runtime, "acme", "billing_cost_daily")} == {DAY}
    view = get_run(trigger_client, acme, run_id)
    assert view["steps"][0]["rows_processed"] == daily_rows(loaded_acme, DAY), "the uploaded rows of the day"
    assert view["steps"][1]["rows_processed"] == len(output)


def test_cost_billing_run_records_pending_running_complete_as_appended_rows(
    runtime, trigger_client, acme, loaded_acme
):
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    records = run_records(runtime, "acme", run_id)
    assert [r["status"] for r in records] == ["PENDING", "RUNNING", "COMPLETE"]
    assert [r["seq"] for r in records] == sorted({r["seq"] for r in records})
    assert records[0]["config_snapshot"], "the PENDING record holds the resolved pipeline"
    assert records[-1]["end_time"] is not None and records[0]["end_time"] is None
    assert {r["pipeline_id"] for r in records} == {"acme-gcp-cost-cost_billing"}

    view = get_run(trigger_client, acme, run_id)
    assert view["status"] == "COMPLETE" and view["error_message"] is None
    assert view["duration_ms"] is not None and view["duration_ms"] >= 0
    assert [s["step_id"] for s in view["steps"]] == STEP_IDS
    assert [s["status"] for s in view["steps"]] == ["COMPLETE", "COMPLETE", "COMPLETE", "SKIPPED"]
    for step in view["steps"][:3]:
        assert isinstance(step["rows_processed"], int) and step["rows_processed"] > 0, step
        assert isinstance(step["duration_ms"], int) and step["duration_ms"] >= 0, step
        assert step["start_time"] and step["end_time"], step
    assert view["steps"][2]["rows_processed"] == 6, "one result per data-quality check"


def test_cost_billing_writes_passing_dq_results_for_the_run(runtime, trigger_client, acme, loaded_acme):
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    results = rows_of(runtime, "acme", "dq_results", "pipeline_logging_id = @run", {"run": run_id})
    assert len(results) == 6
    assert {r["status"] for r in results} == {"PASS"}, results
    assert {r["check_name"] for r in results} >= {"min_rows", "one_row_per_group", "net_cost_adds_up"}
    assert {r["step_id"] for r in results} == {"quality"}


def test_rerunning_a_day_after_the_export_changed_replaces_only_that_day(
    runtime, trigger_client, acme, loaded_acme
):
    for day in (BEFORE, DAY):
        start_run(trigger_client, acme, "acme", date=day.isoformat())
    wait_for_bus(runtime)
    before_untouched = rows_of(runtime, "acme", "billing_cost_daily", "usage_date = @d", {"d": BEFORE})

    export = table_ref("acme", "gcp_billing_export_v1")
    midnight = dt.datetime(DAY.year, DAY.month, DAY.day, 12, tzinfo=UTC)
    runtime.warehouse.execute(
        f"DELETE FROM {export} WHERE usage_start_time >= @noon AND usage_start_time < @end",
        {"noon": midnight, "end": midnight + dt.timedelta(hours=12)},
    )
    runtime.warehouse.execute(
        f"UPDATE {export} SET cost = cost * 2 WHERE usage_start_time >= TIMESTAMP(@day)"
        " AND usage_start_time < @noon",
        {"day": DAY, "noon": midnight},
    )
    changed = rows_of(runtime, "acme", "gcp_billing_export_v1")
    rerun = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    assert get_run(trigger_client, acme, rerun)["status"] == "COMPLETE"
    output = assert_day_matches_export(runtime, "acme", DAY, daily_totals(changed)[DAY])
    keys = Counter((r["service_description"], r["sku_description"], r["project_id"], r["location_region"],
                    r["currency"], r["usage_unit"]) for r in output)  # fmt: skip
    assert max(keys.values()) == 1, "a re-run must not duplicate a day's rows"
    after = rows_of(runtime, "acme", "billing_cost_daily", "usage_date = @d", {"d": BEFORE})
    assert comparable(after, set()) == comparable(before_untouched, set())


# -- at-least-once delivery --------------------------------------------------------------------------
def test_every_message_delivered_twice_leaves_the_same_tables_and_records_as_single_delivery(
    runtime, trigger_client, two_tenants, monkeypatch
):
    rows = generate_billing_export("acme", BEFORE, 3)
    for tenant in ("acme", "globex"):
        load_export(runtime, tenant, rows)
    single = start_run(trigger_client, two_tenants["globex"], "globex")
    wait_for_bus(runtime)

    deliveries: Counter[int] = Counter()
    original = execution.execute_step

    def counting(rt: Runtime, message: StepMessage, attempt: int = 1) -> StepMessage | None:
        deliveries[message.step_index] += 1
        return original(rt, message, attempt)

    monkeypatch.setattr(execution, "execute_step", counting)
    replace_bus(runtime, duplicate_deliveries=2)
    doubled = start_run(trigger_client, two_tenants["acme"], "acme")
    wait_for_bus(runtime)

    assert all(deliveries[index] >= 2 for index in range(4)), deliveries
    assert comparable(rows_of(runtime, "acme", "billing_cost_daily"), set()) == comparable(
        rows_of(runtime, "globex", "billing_cost_daily"), set()
    )
    dq_clock = {"pipeline_logging_id", "checked_at"}
    assert comparable(rows_of(runtime, "acme", "dq_results"), dq_clock) == comparable(
        rows_of(runtime, "globex", "dq_results"), dq_clock
    )
    step_clock = {"pipeline_logging_id", "start_time", "end_time", "duration_ms", "recorded_at", "seq"}
    assert comparable(list(latest_steps(runtime, "acme", doubled).values()), step_clock) == comparable(
        list(latest_steps(runtime, "globex", single).values()), step_clock
    )
    assert len(step_records(runtime, "acme", doubled)) == len(step_records(runtime, "globex", single)) == 4
    statuses = [r["status"] for r in run_records(runtime, "acme", doubled)]
    assert statuses == ["PENDING", "RUNNING", "COMPLETE"]
    assert statuses.count("COMPLETE") == 1


# -- failures ----------------------------------------------------------------------------------------
def test_failed_dq_check_stops_the_run_and_notifies_by_outbox_email(
    runtime, trigger_client, acme, loaded_acme
):
    run_id = start_run(trigger_client, acme, "acme", min_rows=1000, notify_to="finops@acme.example.com")
    wait_for_bus(runtime)

    view = get_run(trigger_client, acme, run_id)
    assert view["status"] == "FAILED"
    assert "min_rows" in (view["error_message"] or ""), view["error_message"]
    assert [s["status"] for s in view["steps"]] == ["COMPLETE", "COMPLETE", "FAILED", "COMPLETE"]
    assert "min_rows" in view["steps"][2]["error_message"]
    assert [r["status"] for r in run_records(runtime, "acme", run_id)] == ["PENDING", "RUNNING", "FAILED"]
    failed = rows_of(
        runtime, "acme", "dq_results", "pipeline_logging_id = @run AND status = 'FAIL'", {"run": run_id}
    )
    assert [r["check_name"] for r in failed] == ["min_rows"]

    emails = sorted(outbox("acme").glob("*.eml"))
    assert [e.name for e in emails] == [f"{run_id}-notify_failure.eml"]
    text = emails[0].read_text()
    assert "To: finops@acme.example.com" in text
    assert "failed" in text and run_id in text


def test_successful_run_skips_the_failure_notification_and_writes_no_email(
    runtime, trigger_client, acme, loaded_acme
):
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    view = get_run(trigger_client, acme, run_id)
    assert view["status"] == "COMPLETE"
    assert view["steps"][3]["step_id"] == "notify_failure" and view["steps"][3]["status"] == "SKIPPED"
    assert list(outbox("acme").glob("*.eml")) == []


def test_step_that_keeps_failing_transiently_is_dead_lettered_and_fails_the_run(
    three_attempts, runtime, trigger_client, acme, loaded_acme, monkeypatch
):
    assert runtime.settings.step_max_attempts == three_attempts
    registry.is_registered("gcp.bq_etl")  # load the processor families before patching one entry
    calls = []

    def quota_exceeded(ctx: registry.StepContext) -> registry.StepResult:
        calls.append(ctx.attempt)
        raise TransientError("warehouse quota exceeded for this test")

    monkeypatch.setitem(registry._REGISTRY, "gcp.bq_etl", quota_exceeded)
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime, timeout=30)

    assert calls == [1, 2, 3]
    dead = [(topic, json.loads(data)) for topic, data, _ in runtime.bus.dead_lettered]
    assert dead == [
        (
            runtime.settings.dead_letter_topic,
            {"schema": "convergence.step/v1", "run_id": run_id, "tenant_id": "acme", "step_index": 1},
        )
    ]
    view = get_run(trigger_client, acme, run_id)
    assert view["status"] == "FAILED"
    assert "3 delivery attempts" in view["error_message"], view["error_message"]
    assert "warehouse quota exceeded for this test" in view["error_message"]
    assert [s["status"] for s in view["steps"]] == ["COMPLETE", "FAILED", "SKIPPED", "COMPLETE"]
    first = [r["status"] for r in step_records(runtime, "acme", run_id) if r["step_index"] == 1]
    assert first == ["RETRYING", "RETRYING", "RETRYING", "FAILED"]
    assert [r["status"] for r in run_records(runtime, "acme", run_id)].count("FAILED") == 1
    assert (outbox("acme") / f"{run_id}-notify_failure.eml").is_file()


def test_transient_error_that_clears_on_retry_completes_with_one_complete_record_per_step(
    runtime, trigger_client, acme, loaded_acme, monkeypatch
):
    real = registry.get_processor("gcp.bq_etl")
    attempts = []

    def flaky_once(ctx: registry.StepContext) -> registry.StepResult:
        attempts.append(ctx.attempt)
        if len(attempts) == 1:
            raise TransientError("connection reset by the warehouse")
        return real(ctx)

    monkeypatch.setitem(registry._REGISTRY, "gcp.bq_etl", flaky_once)
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    assert attempts == [1, 2]
    assert get_run(trigger_client, acme, run_id)["status"] == "COMPLETE"
    records = step_records(runtime, "acme", run_id)
    assert [(r["step_index"], r["status"]) for r in records] == [
        (0, "COMPLETE"),
        (1, "RETRYING"),
        (1, "COMPLETE"),
        (2, "COMPLETE"),
        (3, "SKIPPED"),
    ]
    assert runtime.bus.dead_lettered == []
    assert [r["status"] for r in run_records(runtime, "acme", run_id)].count("COMPLETE") == 1


def test_bus_failing_deliveries_at_random_still_completes_each_step_once(
    fifteen_attempts, runtime, trigger_client, acme, loaded_acme
):
    assert runtime.settings.step_max_attempts == fifteen_attempts
    bus = replace_bus(runtime, fail_prob=0.4, seed=11, max_retry_delay=0.2)
    run_id = start_run(trigger_client, acme, "acme")
    wait_for_bus(runtime)

    assert bus.dead_lettered == []
    assert get_run(trigger_client, acme, run_id)["status"] == "COMPLETE"
    finals = Counter(r["step_index"] for r in step_records(runtime, "acme", run_id))
    assert finals == {0: 1, 1: 1, 2: 1, 3: 1}
    assert [r["status"] for r in run_records(runtime, "acme", run_id)] == ["PENDING", "RUNNING", "COMPLETE"]


# -- garbage on the steps topic ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{this is not json", id="not-json"),
        pytest.param(b"\xff\xfe\x00binary", id="not-utf8"),
        pytest.param(b"[1, 2, 3]", id="json-array"),
        pytest.param(json.dumps({"schema": "convergence.unknown/v9", "run_id": "x"}).encode(), id="unknown-schema"),
        pytest.param(json.dumps({"schema": "convergence.schedule/v1", "template": "gcp/example/dryrun"}).encode(),
                     id="schedule-on-steps-topic"),
        pytest.param(json.dumps({"schema": "convergence.step/v1", "run_id": "r", "tenant_id": "Bad Tenant!",
                                 "step_index": 0}).encode(), id="invalid-tenant-id"),
        pytest.param(encode(StepMessage(run_id="0b9e1c2a-run-that-never-existed", tenant_id="acme", step_index=0)),
                     id="unknown-run"),
    ],
)  # fmt: skip
def test_malformed_or_unknown_step_messages_are_acknowledged_not_retried(runtime, acme, data):
    runtime.bus.publish_raw(runtime.settings.steps_topic, data, {"tenant_id": "acme"})
    assert runtime.bus.drain(10), "a dead message kept being redelivered"
    assert runtime.bus.dead_lettered == []


def test_step_message_for_an_unknown_tenant_is_acknowledged_not_retried(runtime, two_tenants):
    message = StepMessage(run_id="0b9e1c2a-run-of-nobody", tenant_id="nobody_here", step_index=0)
    runtime.bus.publish_raw(runtime.settings.steps_topic, encode(message), message.attributes())
    assert runtime.bus.drain(8), "a step message for an unknown tenant kept being redelivered"
    assert runtime.bus.dead_lettered == []


def test_step_index_beyond_the_pipeline_is_acknowledged_and_the_run_still_completes(
    runtime, trigger_client, acme, loaded_acme
):
    run_id = start_run(trigger_client, acme, "acme")
    stray = StepMessage(run_id=run_id, tenant_id="acme", step_index=7)
    runtime.bus.publish_raw(runtime.settings.steps_topic, encode(stray), stray.attributes())
    wait_for_bus(runtime, timeout=15)

    assert runtime.bus.dead_lettered == []
    assert get_run(trigger_client, acme, run_id)["status"] == "COMPLETE"
    assert Counter(r["step_index"] for r in step_records(runtime, "acme", run_id)) == {0: 1, 1: 1, 2: 1, 3: 1}
