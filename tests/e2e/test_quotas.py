"""Plan quotas and the per-tenant rate limit, through the trigger function (CONTRACT §2: 429 rate or quota).

Limits are made small by onboarding and then updating the organisation's `org_subscriptions` row, the
way an operator changes a plan. The bus records step messages without running them, so accepted runs stay
PENDING (in flight) and a test can see that a refused run published nothing. Onboarding's own dry run is
the day's first run of every new organisation, and `gcp/example/dryrun` its first template.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from common.bus.local import LocalBus
from common.metadata import runs
from common.metadata import usage as usage_records
from common.runtime import Runtime
from common.services import chunk_starts, quotas, rate_limits
from common.settings import get_settings, reset_settings
from common.warehouse.bigquery import BigQueryWarehouse
from common.warehouse.sql import table_ref
from common.wiring import build_runtime, set_runtime
from tests.e2e.support import Clock, assert_error, assert_json

DRYRUN = "/api/v1/pipelines/run/{org}/gcp/example/dryrun"
COST_BILLING = "/api/v1/pipelines/run/{org}/gcp/cost/cost_billing"
BILLING_FOCUS = "/api/v1/pipelines/run/{org}/gcp/cost/billing_focus"
TEMPLATES = "/api/v1/pipelines/templates"


def seconds_to_midnight() -> int:
    return quotas.seconds_until_midnight(dt.datetime.now(dt.UTC))


class RecordingBus(LocalBus):
    """The local bus with nothing subscribed: it keeps what is published, so nothing runs."""

    def __init__(self, project: str) -> None:
        super().__init__(project, workers=0)
        self.published: list[tuple[str, dict[str, str]]] = []

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        self.published.append((topic, dict(attributes)))
        return super().publish_raw(topic, data, attributes)


@pytest.fixture
def bus(runtime: Runtime) -> RecordingBus:
    runtime.bus.close()
    runtime.bus = RecordingBus(runtime.settings.gcp_project_id)
    return runtime.bus


@pytest.fixture
def onboard_plan(onboard_client: Any, root_headers: dict[str, str]) -> Callable[..., dict[str, str]]:
    """Bootstrap once, then onboard an organisation on a plan; returns its key headers."""
    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)

    def onboard(org: str, plan: str | None = None) -> dict[str, str]:
        body = {
            "org_slug": org,
            "company_name": org.title(),
            "admin_email": f"admin@{org.replace('_', '-')}.example.com",
        }
        if plan:
            body["subscription_plan"] = plan
        response = onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body)
        return {"X-API-Key": assert_json(response, 201)["api_key"]}

    return onboard


def set_limits(rt: Runtime, org: str, **limits: int) -> None:
    """Change an organisation's plan limits in the control table, as an operator would."""
    assignments = ", ".join(f"{name} = @{name}" for name in limits)
    rt.warehouse.execute(
        f"UPDATE {table_ref('organizations', 'org_subscriptions')} SET {assignments} WHERE org_slug = @org",
        {"org": org, **limits},
    )


def usage(rt: Runtime, org: str) -> dict[str, Any]:
    """What the organisation used today, as admission reads it from its own run records."""
    now = dt.datetime.now(dt.UTC)
    (row,) = usage_records.read_standings(rt, [org], day=now.date(), since=now - quotas.ACTIVE_RUN_HORIZON)
    return {"runs_started": row["runs_today"], "templates_used": sorted(row["templates_used"] or [])}


def run_ids(rt: Runtime, org: str) -> list[str]:
    return [r.pipeline_logging_id for r in runs.latest_runs(rt.warehouse, org, limit=1000)]


def start(client: Any, headers: dict[str, str], org: str, path: str = DRYRUN, **body: Any) -> Any:
    return client.post(path.format(org=org), headers=headers, json=body)


def retry_after(response: Any) -> int:
    value = response.headers.get("Retry-After")
    assert value is not None and value.isdigit(), response.headers
    return int(value)


# -- counters --------------------------------------------------------------------------------------


def test_onboarding_dry_run_is_the_first_run_of_the_day_and_the_first_template(runtime, onboard_plan):
    onboard_plan("acme")
    assert usage(runtime, "acme") == {"runs_started": 1, "templates_used": ["gcp/example/dryrun"]}


# -- runs per day ----------------------------------------------------------------------------------


def test_run_over_the_daily_limit_is_429_until_utc_midnight_and_leaves_nothing(
    runtime, bus, trigger_client, onboard_plan
):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_runs_per_day=3, max_concurrent_runs=50)
    for day in ("2024-05-01", "2024-05-02"):
        assert_json(start(trigger_client, acme, "acme", date=day), 202)
    before_runs, before_published = run_ids(runtime, "acme"), len(bus.published)
    assert before_published == 2  # each accepted run published its step 0

    latest = seconds_to_midnight()
    response = start(trigger_client, acme, "acme", date="2024-05-03")
    earliest = seconds_to_midnight()

    body = assert_error(response, 429, "quota_exceeded")
    assert body["message"] == "starter plan allows 3 runs per day; 3 started today"
    assert earliest <= retry_after(response) <= latest
    assert body["retry_after"] == retry_after(response)
    assert run_ids(runtime, "acme") == before_runs
    assert len(bus.published) == before_published
    assert usage(runtime, "acme")["runs_started"] == 3


def test_daily_limit_counts_api_and_bulk_runs_together(runtime, bus, trigger_client, onboard_plan):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_runs_per_day=3, max_concurrent_runs=50)
    outcome = chunk_starts.start_runs(runtime, ["acme"], "gcp", "example", "dryrun", {"date": "2024-05-01"})
    assert outcome["acme"].error is None and outcome["acme"].run.trigger_type == "bulk"
    assert_json(start(trigger_client, acme, "acme", date="2024-05-02"), 202)
    assert_error(start(trigger_client, acme, "acme", date="2024-05-03"), 429, "quota_exceeded")
    refused = chunk_starts.start_runs(runtime, ["acme"], "gcp", "example", "dryrun", {"date": "2024-05-04"})
    assert refused["acme"].error is not None and refused["acme"].error.code == "quota_exceeded"
    assert usage(runtime, "acme")["runs_started"] == 3


def test_concurrent_triggers_never_take_more_than_the_daily_limit(runtime, bus, trigger_client, onboard_plan):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_runs_per_day=5, max_concurrent_runs=50)
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(12)

    def trigger(day: int) -> None:
        barrier.wait()
        response = start(trigger_client, acme, "acme", date=f"2024-05-{day:02d}")
        results.append(
            (response.status_code, response.get_json()["error"] if response.status_code >= 400 else "")
        )

    threads = [threading.Thread(target=trigger, args=(day,)) for day in range(1, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(202, "")] * 4 + [(429, "quota_exceeded")] * 8
    assert len(run_ids(runtime, "acme")) == 5
    assert usage(runtime, "acme")["runs_started"] == 5


def test_identical_run_in_flight_is_still_409_and_a_replay_202_when_the_quota_is_used_up(
    runtime, bus, trigger_client, onboard_plan
):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_runs_per_day=2, max_concurrent_runs=50)
    keyed = acme | {"Idempotency-Key": "nightly-2024-05-01"}
    first = assert_json(
        trigger_client.post(DRYRUN.format(org="acme"), headers=keyed, json={"date": "2024-05-01"}), 202
    )
    again = assert_error(start(trigger_client, acme, "acme", date="2024-05-01"), 409, "run_in_flight")
    assert again["pipeline_logging_id"] == first["pipeline_logging_id"]
    replay = assert_json(
        trigger_client.post(DRYRUN.format(org="acme"), headers=keyed, json={"date": "2024-05-01"}), 202
    )
    assert replay["replayed"] is True and replay["pipeline_logging_id"] == first["pipeline_logging_id"]
    assert usage(runtime, "acme")["runs_started"] == 2
    assert_error(start(trigger_client, acme, "acme", date="2024-05-02"), 429, "quota_exceeded")


def test_a_new_utc_day_starts_the_count_again(runtime, bus, trigger_client, onboard_plan):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_runs_per_day=1, max_concurrent_runs=50)
    assert_error(start(trigger_client, acme, "acme", date="2024-05-01"), 429, "quota_exceeded")
    # The day's run (onboarding's dry run) becomes yesterday's.
    runtime.warehouse.execute(
        f"UPDATE {table_ref('acme', 'pipeline_runs')} SET recorded_at = TIMESTAMP_SUB(recorded_at, INTERVAL 1 DAY),"
        " start_time = TIMESTAMP_SUB(start_time, INTERVAL 1 DAY) WHERE TRUE"
    )
    assert usage(runtime, "acme")["runs_started"] == 0
    assert_json(start(trigger_client, acme, "acme", date="2024-05-01"), 202)
    assert usage(runtime, "acme")["runs_started"] == 1


# -- concurrent runs -------------------------------------------------------------------------------


def test_runs_in_flight_above_the_starter_plan_are_429_but_not_on_enterprise(
    runtime, bus, trigger_client, onboard_plan
):
    acme, globex = onboard_plan("acme", "starter"), onboard_plan("globex", "enterprise")
    for day in range(1, 6):
        assert_json(start(trigger_client, acme, "acme", date=f"2024-05-{day:02d}"), 202)
        assert_json(start(trigger_client, globex, "globex", date=f"2024-05-{day:02d}"), 202)
    before = run_ids(runtime, "acme")

    response = start(trigger_client, acme, "acme", date="2024-05-06")
    body = assert_error(response, 429, "too_many_concurrent_runs")
    assert body["message"] == "starter plan allows 5 concurrent runs; 5 are pending or running"
    assert retry_after(response) == quotas.CONCURRENCY_RETRY_AFTER
    assert run_ids(runtime, "acme") == before
    assert_json(start(trigger_client, globex, "globex", date="2024-05-06"), 202)


def test_a_finished_run_frees_its_concurrency_slot(runtime, bus, trigger_client, onboard_plan):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_concurrent_runs=2)
    first = assert_json(start(trigger_client, acme, "acme", date="2024-05-01"), 202)["pipeline_logging_id"]
    assert_json(start(trigger_client, acme, "acme", date="2024-05-02"), 202)
    body = assert_error(
        start(trigger_client, acme, "acme", date="2024-05-03"), 429, "too_many_concurrent_runs"
    )
    assert "allows 2 concurrent runs; 2 are pending or running" in body["message"]
    records = runs.run_records(runtime.warehouse, "acme", first)
    runs.append_run_status(runtime.warehouse, "acme", records[-1], "COMPLETE")
    assert_json(start(trigger_client, acme, "acme", date="2024-05-03"), 202)


# -- templates -------------------------------------------------------------------------------------


def test_a_template_beyond_the_plan_is_429_while_templates_already_used_still_run(
    runtime, bus, trigger_client, onboard_plan
):
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_templates=2, max_concurrent_runs=50)
    assert_json(start(trigger_client, acme, "acme", COST_BILLING, date="2024-05-01"), 202)

    response = start(trigger_client, acme, "acme", BILLING_FOCUS, date="2024-05-01")
    body = assert_error(response, 429, "quota_exceeded")
    assert body["message"].startswith("starter plan allows 2 templates; 2 already run")
    assert "gcp/cost/billing_focus" in body["message"]
    assert retry_after(response) == quotas.TEMPLATES_RETRY_AFTER
    assert sorted(usage(runtime, "acme")["templates_used"]) == ["gcp/cost/cost_billing", "gcp/example/dryrun"]
    assert_json(start(trigger_client, acme, "acme", COST_BILLING, date="2024-05-02"), 202)
    assert_json(start(trigger_client, acme, "acme", DRYRUN, date="2024-05-02"), 202)


def test_quota_of_one_tenant_does_not_touch_another(runtime, bus, trigger_client, onboard_plan):
    acme, globex = onboard_plan("acme"), onboard_plan("globex")
    set_limits(runtime, "acme", max_runs_per_day=1)
    assert_error(start(trigger_client, acme, "acme", date="2024-05-01"), 429, "quota_exceeded")
    assert_json(start(trigger_client, globex, "globex", date="2024-05-01"), 202)
    assert usage(runtime, "globex")["runs_started"] == 2


# -- bulk ------------------------------------------------------------------------------------------


class StatementCounter:
    """Counts the statements a warehouse runs (wrapping the real adapter's methods), and those that write."""

    def __init__(self, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = self.writes = 0
        for name in ("query", "execute", "run_atomically", "insert_rows"):
            original = getattr(rt.warehouse, name)
            monkeypatch.setattr(rt.warehouse, name, self._counted(original, writes=name != "query"))

    def _counted(self, method: Callable[..., Any], *, writes: bool) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            self.writes += writes
            return method(*args, **kwargs)

        return run


def test_admitting_many_tenants_takes_one_query_like_admitting_two_and_writes_nothing(
    runtime, onboard_plan, monkeypatch
):
    tenants = [f"tenant_{i}" for i in range(8)]
    for tenant in tenants:
        onboard_plan(tenant)
    set_limits(runtime, "tenant_3", max_runs_per_day=1)
    counter = StatementCounter(runtime, monkeypatch)

    two = quotas.admit_runs(runtime, tenants[:2], "gcp/cost/cost_billing")
    for_two, counter.count = counter.count, 0
    many = quotas.admit_runs(runtime, tenants, "gcp/cost/cost_billing")

    assert counter.count == for_two == 1
    assert all(a.admitted for a in two.values())
    assert [t for t, a in many.items() if not a.admitted] == ["tenant_3"]
    assert many["tenant_3"].refusal.code == "quota_exceeded"
    assert counter.writes == 0  # the run record an admitted run gets is what counts it
    assert [usage(runtime, t)["runs_started"] for t in tenants[:3]] == [1, 1, 1]


def test_an_admitted_trigger_writes_only_its_own_run_record_and_nothing_shared(
    runtime, bus, trigger_client, onboard_plan, monkeypatch
):
    acme = onboard_plan("acme")
    written: list[str] = []
    for name in ("execute", "run_atomically", "insert_rows", "load_arrow"):
        original = getattr(runtime.warehouse, name)

        def record(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            written.append(str(args[:2]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(runtime.warehouse, name, record)
    assert_json(start(trigger_client, acme, "acme", date="2024-05-01"), 202)
    assert written == [str(("acme", "pipeline_runs"))]


def test_a_chunk_racing_triggers_of_the_same_tenant_exceeds_a_limit_by_at_most_one_run(
    runtime, bus, trigger_client, onboard_plan
):
    """Triggers of one tenant are admitted one at a time (its quota claim); a chunk reads without claiming."""
    acme = onboard_plan("acme")
    set_limits(runtime, "acme", max_runs_per_day=3, max_concurrent_runs=50)  # the dry run is one of them
    barrier = threading.Barrier(7)
    codes: list[int] = []

    def trigger(day: int) -> None:
        barrier.wait()
        codes.append(start(trigger_client, acme, "acme", date=f"2024-06-{day:02d}").status_code)

    def chunk() -> None:
        barrier.wait()
        outcome = chunk_starts.start_runs(
            runtime, ["acme"], "gcp", "example", "dryrun", {"date": "2024-07-01"}
        )
        codes.append(202 if outcome["acme"].run is not None else outcome["acme"].error.status)

    threads = [threading.Thread(target=trigger, args=(day,)) for day in range(1, 7)]
    threads.append(threading.Thread(target=chunk))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(codes)) == [202, 429]
    assert 3 <= usage(runtime, "acme")["runs_started"] <= 4
    assert usage(runtime, "acme")["runs_started"] == len(run_ids(runtime, "acme")) == 1 + codes.count(202)


def test_bulk_start_replayed_by_a_redelivery_spends_no_quota(runtime, bus, onboard_plan):
    for org in ("acme", "globex"):
        onboard_plan(org)
    set_limits(runtime, "globex", max_runs_per_day=1)
    key = f"bulk:{uuid.uuid4().hex}"
    body = {"date": "2024-05-01", "trigger_by": "scheduler"}

    first = chunk_starts.start_runs(
        runtime, ["acme", "globex"], "gcp", "example", "dryrun", body, idempotency_key=key
    )
    assert first["acme"].run is not None and not first["acme"].replayed
    assert first["globex"].run is None and first["globex"].error.status == 429
    again = chunk_starts.start_runs(
        runtime, ["acme", "globex"], "gcp", "example", "dryrun", body, idempotency_key=key
    )
    assert (
        again["acme"].replayed
        and again["acme"].run.pipeline_logging_id == first["acme"].run.pipeline_logging_id
    )
    assert again["globex"].error.code == "quota_exceeded"
    assert usage(runtime, "acme")["runs_started"] == 2
    assert usage(runtime, "globex")["runs_started"] == 1
    assert bus.published == []


def test_bulk_start_stopped_by_its_time_budget_gives_back_the_slots_it_did_not_use(
    runtime, bus, onboard_plan
):
    tenants = ["acme", "globex", "initech"]
    for org in tenants:
        onboard_plan(org)
    checks = iter([False, True])

    started = chunk_starts.start_runs(
        runtime, tenants, "gcp", "example", "dryrun", {"date": "2024-05-01"}, should_stop=lambda: next(checks)
    )
    assert list(started) == ["acme"] and started["acme"].run.status == "PENDING"
    assert [usage(runtime, org)["runs_started"] for org in tenants] == [2, 1, 1]
    assert [len(run_ids(runtime, org)) for org in tenants] == [2, 1, 1]


# -- rate limit ------------------------------------------------------------------------------------


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    """The pipeline routes' limiter (default RATE_LIMIT_PER_MINUTE) on a clock 15.5 s into a minute."""
    clock = Clock(1_700_000_000 - 1_700_000_000 % 60 + 15.5)
    rate_limits.install(runtime, rate_limits.RateLimiter(runtime.settings.rate_limit_per_minute, now=clock))
    return clock


def upload(client: Any, headers: dict[str, str], org: str) -> Any:
    """A small write: three rows appended to a scratch table."""
    return client.post(f"/api/v1/data/{org}/uploads/scratch", headers=headers, data=b"sku,amount\nvm,1.5\n",
                       content_type="text/csv")  # fmt: skip


def test_51st_write_in_a_minute_is_429_until_the_next_minute_while_reads_go_on(
    clock, trigger_client, onboard_plan
):
    acme, globex = onboard_plan("acme"), onboard_plan("globex")
    for _ in range(50):
        assert_json(upload(trigger_client, acme, "acme"), 201)
    response = upload(trigger_client, acme, "acme")
    body = assert_error(response, 429, "rate_limited")
    assert "50 write requests per minute" in body["message"]
    assert retry_after(response) == 45
    assert_error(start(trigger_client, acme, "acme"), 429, "rate_limited")  # a run trigger is a write too
    for path in (TEMPLATES, "/api/v1/pipelines/runs", "/api/v1/data/acme/tables"):
        assert_json(trigger_client.get(path, headers=acme), 200)  # reads have a limit of their own
    assert_json(upload(trigger_client, globex, "globex"), 201)

    clock.now += 44
    late = upload(trigger_client, acme, "acme")
    assert_error(late, 429, "rate_limited")
    assert retry_after(late) == 1
    clock.now += 1
    for _ in range(50):
        assert_json(upload(trigger_client, acme, "acme"), 201)
    assert_error(upload(trigger_client, acme, "acme"), 429, "rate_limited")


def test_polling_reads_never_use_up_the_writes_and_have_a_generous_limit_of_their_own(
    monkeypatch, runtime, trigger_client, onboard_plan
):
    acme = onboard_plan("acme")
    assert runtime.settings.read_rate_limit_per_minute == 1000
    monkeypatch.setenv("READ_RATE_LIMIT_PER_MINUTE", "60")
    reset_settings()
    runtime.close()
    set_runtime(build_runtime(get_settings()))
    run_id = assert_json(start(trigger_client, acme, "acme"), 202)["pipeline_logging_id"]
    for _ in range(60):
        assert_json(trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme), 200)
    body = assert_error(
        trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme), 429, "rate_limited"
    )
    assert "60 read requests per minute" in body["message"] and body["limit"] == "read_rate_limit_per_minute"
    assert_json(upload(trigger_client, acme, "acme"), 201)  # writes are counted apart from reads


def test_rate_limit_follows_the_setting(monkeypatch, runtime, trigger_client, onboard_plan):
    acme = onboard_plan("acme")
    monkeypatch.setenv("RATE_LIMIT_PER_MINUTE", "3")
    reset_settings()
    runtime.close()
    set_runtime(build_runtime(get_settings()))  # the same embedded platform, started with the new setting
    for _ in range(3):
        assert_json(upload(trigger_client, acme, "acme"), 201)
    refused = assert_error(upload(trigger_client, acme, "acme"), 429)
    assert "3 write requests per minute" in refused["message"]


def test_requests_refused_as_bad_input_do_not_use_up_the_minute(clock, trigger_client, onboard_plan):
    acme = onboard_plan("acme")
    for _ in range(60):
        assert_error(start(trigger_client, acme, "acme", date="not-a-date"), 400)
    for _ in range(50):
        assert_json(upload(trigger_client, acme, "acme"), 201)
    assert_error(upload(trigger_client, acme, "acme"), 429, "rate_limited")


# -- BigQuery --------------------------------------------------------------------------------------


@pytest.fixture
def bigquery_runtime(runtime: Runtime, bigquery_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The platform on bqemulator, in a project of its own, installed in place of the embedded one."""
    monkeypatch.setenv("CONVERGENCE_WAREHOUSE", "bigquery")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator)
    monkeypatch.setenv("GCP_PROJECT_ID", f"quota-{uuid.uuid4().hex[:10]}")
    reset_settings()
    runtime.close()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    return rt


def test_quotas_and_shared_rate_windows_run_on_bigquery(bigquery_runtime, onboard_plan, trigger_client):
    rt = bigquery_runtime
    assert isinstance(rt.warehouse, BigQueryWarehouse)
    acme, _ = onboard_plan("acme"), onboard_plan("globex")
    rt.bus.close()
    rt.bus = RecordingBus(rt.settings.gcp_project_id)
    set_limits(rt, "acme", max_runs_per_day=2)

    assert_json(start(trigger_client, acme, "acme", date="2024-05-01"), 202)
    body = assert_error(start(trigger_client, acme, "acme", date="2024-05-02"), 429, "quota_exceeded")
    assert body["message"] == "starter plan allows 2 runs per day; 2 started today"
    admitted = quotas.admit_runs(rt, ["acme", "globex"], "gcp/cost/cost_billing")
    assert {t: a.admitted for t, a in admitted.items()} == {"acme": False, "globex": True}
    assert usage(rt, "globex") == {"runs_started": 1, "templates_used": ["gcp/example/dryrun"]}

    clock = Clock(1_700_000_000 - 1_700_000_000 % 60)
    first, second = (
        rate_limits.RateLimiter(
            5, now=clock, store=rate_limits.WarehouseWindows(rt), run_sync=lambda work: work()
        )
        for _ in range(2)
    )
    for _ in range(3):
        first.check("acme")
    first.sync()
    second.sync()
    assert second.used("acme") == 3
