"""Tenant schedules through the trigger function's HTTP API, and the dispatcher that starts them.

The dispatcher runs against the embedded platform: its schedules messages go over the local bus to the
trigger function's schedules handler, which starts the runs; a collector subscribed to the schedules topic
counts what the dispatcher published.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cloudevents.http import CloudEvent

from common.bus.local import LocalBus
from common.bus.messages import PUBSUB_EVENT_TYPE, DeadMessage, ScheduleMessage, decode_event
from common.errors import ConfigurationError, DependencyUnavailable
from common.runtime import Runtime
from common.services import rate_limits
from common.services.dispatcher import dispatch_due
from common.services.tenant_schedules import MAX_SCHEDULES_PER_TENANT
from common.warehouse.bigquery import BigQueryWarehouse
from common.wiring import set_runtime
from common.wiring import trigger_schedules as handle_dispatch_event
from tests.conftest import function_client, wait_for_bus
from tests.e2e.cost_support import platform_runtime
from tests.e2e.support import assert_error, assert_json

DRYRUN = "gcp/example/dryrun"
COST_BILLING = "gcp/cost/cost_billing"
CADENCE = "every-15-minutes"
MINUTE = dt.timedelta(minutes=1)
DAY = dt.timedelta(days=1)
SCHEDULE_FIELDS = {"schedule_id", "org_slug", "name", "template", "cron", "time_zone", "parameters",
                   "enabled", "next_run_at", "created_at"}  # fmt: skip


def path(org: str) -> str:
    return f"/api/v1/schedules/{org}"


def parse_utc(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


class Collector:
    """Every schedules message the dispatcher published (chunk messages of a fan-out are not counted)."""

    def __init__(self, runtime: Runtime) -> None:
        self.messages: list[ScheduleMessage] = []
        self._lock = threading.Lock()
        bus: Any = runtime.bus
        bus.subscribe(runtime.settings.schedules_topic, self, name="schedules-collector")

    def __call__(self, event: Any) -> None:
        try:
            message, _, _ = decode_event(event, ScheduleMessage)
        except DeadMessage:
            return
        if message.chunk is None:  # type: ignore[attr-defined]
            with self._lock:
                self.messages.append(message)  # type: ignore[arg-type]

    def of(self, schedule_id: str) -> list[ScheduleMessage]:
        return [m for m in self.messages if m.schedule_id == schedule_id]


def dispatcher_event(data: bytes) -> CloudEvent:
    """A Pub/Sub push CloudEvent, as the trigger function's schedules entry point receives one."""
    return CloudEvent(
        {"type": PUBSUB_EVENT_TYPE, "source": "//pubsub.googleapis.com/projects/p/topics/schedules"},
        {"message": {"data": base64.b64encode(data).decode(), "attributes": {"cadence": CADENCE},
                     "messageId": "1"}, "subscription": "projects/p/subscriptions/s"},
    )  # fmt: skip


def tick(now: dt.datetime, cadence: str = CADENCE) -> CloudEvent:
    body = {"schema": "convergence.dispatch/v1", "cadence": cadence, "now": now.isoformat()}
    return dispatcher_event(json.dumps(body).encode())


@pytest.fixture
def tenants(two_tenants: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return two_tenants


@pytest.fixture
def collector(runtime: Runtime, tenants: dict[str, dict[str, str]]) -> Collector:
    wait_for_bus(runtime)  # onboarding's own messages are done
    return Collector(runtime)


@pytest.fixture
def create(trigger_client: Any, tenants: dict[str, dict[str, str]]) -> Callable[..., dict[str, Any]]:
    def create(org: str = "acme", **body: Any) -> dict[str, Any]:
        body = {"template": DRYRUN, "cron": "0 6 * * *", "time_zone": "Europe/Berlin"} | body
        return assert_json(trigger_client.post(path(org), headers=tenants[org], json=body), 201)

    return create


def scheduled_runs(trigger_client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    runs = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=headers), 200)["runs"]
    return [run for run in runs if run["trigger_type"] == "schedule"]


def dispatch_twice_at_once(
    rt: Runtime, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Two dispatchers on one tick, both past reading the dispatch record before either claims a slot."""
    both_found_them_due = threading.Barrier(2)
    hold = rt.claims.hold

    def hold_after_both_looked(key: str, **options: Any) -> Any:
        if key == "schedule-dispatch":
            both_found_them_due.wait()
        return hold(key, **options)

    monkeypatch.setattr(rt.claims, "hold", hold_after_both_looked)
    outcomes: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: outcomes.append(dispatch_due(rt, CADENCE, now))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(rt.claims, "hold", hold)
    return outcomes


# -- create, list, delete ---------------------------------------------------------------------------------


def test_a_schedule_is_created_listed_and_deleted(trigger_client, tenants, create):
    before = dt.datetime.now(dt.UTC)
    body = create(name="morning dryrun", parameters={"date": "yesterday"})
    assert set(body) >= SCHEDULE_FIELDS
    assert body["org_slug"] == "acme" and body["template"] == DRYRUN and body["name"] == "morning dryrun"
    assert (body["cron"], body["time_zone"], body["enabled"]) == ("0 6 * * *", "Europe/Berlin", True)
    assert body["parameters"] == {"date": "yesterday"}
    next_run = parse_utc(body["next_run_at"])
    local = next_run.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (6, 0) and before < next_run <= before + DAY
    assert before - MINUTE < parse_utc(body["created_at"]) < dt.datetime.now(dt.UTC) + MINUTE

    listed = assert_json(trigger_client.get(path("acme"), headers=tenants["acme"]), 200)["schedules"]
    assert listed == [body]
    deleted = trigger_client.delete(f"{path('acme')}/{body['schedule_id']}", headers=tenants["acme"])
    assert assert_json(deleted, 200) == {"schedule_id": body["schedule_id"], "deleted": True}
    assert assert_json(trigger_client.get(path("acme"), headers=tenants["acme"]), 200) == {"schedules": []}
    again = trigger_client.delete(f"{path('acme')}/{body['schedule_id']}", headers=tenants["acme"])
    assert_error(again, 404, "schedule_not_found")


def test_a_schedule_defaults_to_utc_enabled_and_no_parameters(create):
    body = create(time_zone="Etc/UTC", cron="30 7 * * mon")
    assert (body["time_zone"], body["enabled"], body["parameters"], body["name"]) == (
        "Etc/UTC",
        True,
        {},
        None,
    )
    next_run = parse_utc(body["next_run_at"])
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (0, 7, 30)


def test_a_disabled_schedule_has_no_next_run(create):
    assert create(enabled=False)["next_run_at"] is None


@pytest.mark.parametrize(
    "change,status,code,named",
    [
        ({"template": "gcp/example/nope"}, 400, "template_not_found", "gcp/example/nope"),
        ({"template": "setup/example/bootstrap"}, 400, "template_not_found", "setup/example/bootstrap"),
        ({"parameters": {"region": "eu"}}, 400, "invalid_parameter", "region"),
        ({"parameters": {"notify_to": "cfo@acme.example.com"}}, 400, "invalid_parameter", "notify_to"),
        ({"parameters": {"date": "last week"}}, 400, "invalid_parameter", "date"),
        ({"parameters": {"trigger_by": "me"}}, 400, "invalid_parameter", "trigger_by"),
        (
            {"template": COST_BILLING, "parameters": {"min_rows": "many"}},
            400,
            "invalid_parameter",
            "min_rows",
        ),
        ({"cron": "0 6 * *"}, 400, "invalid_cron", "five fields"),
        ({"cron": "0 25 * * *"}, 400, "invalid_cron", "0 25 * * *"),
        ({"cron": "R 6 * * *"}, 400, "invalid_cron", "R"),
        ({"time_zone": "Europe/Atlantis"}, 400, "invalid_time_zone", "Europe/Atlantis"),
        ({"cron": "*/5 * * * *"}, 422, "schedule_too_frequent", "15 minutes"),
        ({"cron": "0,10 6 * * *"}, 422, "schedule_too_frequent", "dispatcher"),
        ({"template": "gcp/cost"}, 422, "validation_error", "template"),
        ({"every": "day"}, 422, "validation_error", "every"),
        ({"enabled": "sometimes"}, 422, "validation_error", "enabled"),
    ],
)
def test_a_bad_schedule_is_refused_naming_what_is_wrong_and_nothing_is_stored(
    trigger_client, tenants, change, status, code, named
):
    body = {"template": DRYRUN, "cron": "0 6 * * *", "time_zone": "Europe/Berlin"} | change
    error = assert_error(trigger_client.post(path("acme"), headers=tenants["acme"], json=body), status, code)
    assert named in error["message"]
    assert assert_json(trigger_client.get(path("acme"), headers=tenants["acme"]), 200) == {"schedules": []}


def test_a_body_that_is_not_json_is_400(trigger_client, tenants):
    response = trigger_client.post(
        path("acme"), headers=tenants["acme"], data="{", content_type="application/json"
    )
    assert_error(response, 400, "invalid_json")


def test_a_second_schedule_with_the_same_name_is_409_but_another_tenant_may_use_it(
    trigger_client, tenants, create
):
    create(name="nightly")
    body = {"template": DRYRUN, "cron": "0 1 * * *", "name": "nightly"}
    assert_error(
        trigger_client.post(path("acme"), headers=tenants["acme"], json=body), 409, "schedule_name_taken"
    )
    assert create("globex", name="nightly")["org_slug"] == "globex"
    assert len(assert_json(trigger_client.get(path("acme"), headers=tenants["acme"]), 200)["schedules"]) == 1


def test_a_tenant_may_have_at_most_50_schedules(runtime, trigger_client, tenants, create):
    rate_limits.install(runtime, rate_limits.RateLimiter(1000))  # 51 creations in a minute: past the write limit
    for minute in range(MAX_SCHEDULES_PER_TENANT):
        create(cron=f"{minute} 3 * * *")
    response = trigger_client.post(
        path("acme"), headers=tenants["acme"], json={"template": DRYRUN, "cron": "0 4 * * *"}
    )
    error = assert_error(response, 422, "schedule_limit_reached")
    assert "50" in error["message"]
    assert create("globex")["org_slug"] == "globex"  # the limit is per tenant


# -- keys and isolation -------------------------------------------------------------------------------------


def test_schedules_need_the_tenants_own_key(trigger_client, tenants, create):
    schedule = create()
    one = f"{path('acme')}/{schedule['schedule_id']}"
    assert_error(trigger_client.get(path("acme")), 401)
    assert_error(trigger_client.post(path("acme"), json={"template": DRYRUN, "cron": "0 6 * * *"}), 401)
    assert_error(trigger_client.delete(one), 401)
    other = tenants["globex"]
    assert_error(trigger_client.get(path("acme"), headers=other), 403, "wrong_organization")
    assert_error(
        trigger_client.post(path("acme"), headers=other, json={"template": DRYRUN, "cron": "0 6 * * *"}), 403
    )
    assert_error(trigger_client.delete(one, headers=other), 403)
    assert assert_json(trigger_client.get(path("globex"), headers=other), 200) == {"schedules": []}


def test_another_tenants_schedule_id_is_404_through_ones_own_path(trigger_client, tenants, create):
    schedule = create()
    response = trigger_client.delete(f"{path('globex')}/{schedule['schedule_id']}", headers=tenants["globex"])
    assert_error(response, 404, "schedule_not_found")
    assert_error(trigger_client.delete(f"{path('acme')}/not-an-id", headers=tenants["acme"]), 404)
    listed = assert_json(trigger_client.get(path("acme"), headers=tenants["acme"]), 200)["schedules"]
    assert [s["schedule_id"] for s in listed] == [schedule["schedule_id"]]


# -- the dispatcher -----------------------------------------------------------------------------------------


def test_a_due_tenant_schedule_starts_one_scheduled_run_for_that_tenant(
    runtime, trigger_client, tenants, create, collector
):
    schedule = create(parameters={"date": "yesterday"})
    due = parse_utc(schedule["next_run_at"])
    outcome = dispatch_due(runtime, CADENCE, due + 2 * MINUTE)
    assert outcome["published"] == 1
    assert outcome["slots"] == [{"schedule_id": schedule["schedule_id"], "due_at": schedule["next_run_at"]}]
    wait_for_bus(runtime)
    [message] = collector.of(schedule["schedule_id"])
    assert (message.template, message.tenants, message.trigger_type) == (DRYRUN, ["acme"], "schedule")
    assert message.due_at == schedule["next_run_at"] and message.parameters == {"date": "yesterday"}
    [run] = scheduled_runs(trigger_client, tenants["acme"])
    assert run["pipeline_id"] == "acme-gcp-example-dryrun"
    assert run["trigger_by"] == f"schedule:{schedule['schedule_id']}"
    assert scheduled_runs(trigger_client, tenants["globex"]) == []


def test_a_schedule_is_not_started_before_its_slot(runtime, create, collector):
    schedule = create()
    due = parse_utc(schedule["next_run_at"])
    assert dispatch_due(runtime, CADENCE, due - MINUTE)["published"] == 0
    wait_for_bus(runtime)
    assert collector.of(schedule["schedule_id"]) == []


def test_the_same_dispatcher_tick_delivered_twice_starts_the_slot_once(
    runtime, trigger_client, tenants, create, collector
):
    schedule = create()
    event = tick(parse_utc(schedule["next_run_at"]) + MINUTE)
    handle_dispatch_event(event)
    handle_dispatch_event(event)
    handle_dispatch_event(tick(parse_utc(schedule["next_run_at"]) + 16 * MINUTE))  # the next tick
    wait_for_bus(runtime)
    assert len(collector.of(schedule["schedule_id"])) == 1
    assert len(scheduled_runs(trigger_client, tenants["acme"])) == 1


def test_two_dispatchers_at_once_publish_a_slot_once(runtime, create, collector, monkeypatch):
    schedules = [create(cron="0 6 * * *"), create("globex", cron="0 6 * * *")]
    outcomes = dispatch_twice_at_once(runtime, parse_utc(schedules[0]["next_run_at"]) + MINUTE, monkeypatch)
    wait_for_bus(runtime)
    assert sorted(o["due"] for o in outcomes) == [2, 2]
    assert sorted(o["published"] for o in outcomes) == [0, 2]
    assert [len(collector.of(s["schedule_id"])) for s in schedules] == [1, 1]


def test_after_a_dispatcher_outage_only_the_latest_missed_slot_starts(runtime, create, collector):
    schedule = create(cron="0 7 * * *", time_zone="Etc/UTC")
    first = parse_utc(schedule["next_run_at"])
    assert dispatch_due(runtime, CADENCE, first + MINUTE)["published"] == 1
    outcome = dispatch_due(runtime, CADENCE, first + 3 * DAY + 2 * dt.timedelta(hours=1))  # down for 3 days
    assert [s["due_at"] for s in outcome["slots"]] == [(first + 3 * DAY).isoformat().replace("+00:00", "Z")]
    wait_for_bus(runtime)
    assert [m.due_at for m in collector.of(schedule["schedule_id"])] == [
        schedule["next_run_at"], outcome["slots"][0]["due_at"]
    ]  # fmt: skip


def test_a_disabled_schedule_never_fires(runtime, create, collector):
    disabled = create(enabled=False, cron="0 7 * * *", time_zone="Etc/UTC")
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    for quarter in range(0, 2 * 96, 3):  # every 45 minutes for two days
        dispatch_due(runtime, CADENCE, start + quarter * dt.timedelta(minutes=15))
    wait_for_bus(runtime)
    assert collector.of(disabled["schedule_id"]) == []


def test_a_deleted_schedule_stops_firing(runtime, trigger_client, tenants, create, collector):
    schedule = create(cron="0 7 * * *", time_zone="Etc/UTC")
    first = parse_utc(schedule["next_run_at"])
    assert dispatch_due(runtime, CADENCE, first + MINUTE)["published"] == 1
    trigger_client.delete(f"{path('acme')}/{schedule['schedule_id']}", headers=tenants["acme"])
    assert dispatch_due(runtime, CADENCE, first + DAY + MINUTE)["published"] == 0
    wait_for_bus(runtime)
    assert len(collector.of(schedule["schedule_id"])) == 1


def test_the_platform_schedule_starts_for_every_tenant_at_its_utc_slot(runtime, tenants, collector):
    morning = dt.datetime.now(dt.UTC).replace(hour=6, minute=0, second=0, microsecond=0) + DAY
    assert dispatch_due(runtime, None, morning - 10 * MINUTE)["published"] == 0
    outcome = dispatch_due(runtime, CADENCE, morning + 3 * MINUTE)
    assert outcome["slots"] == [
        {"schedule_id": "daily_gcp_costs", "due_at": morning.isoformat().replace("+00:00", "Z")}
    ]
    assert dispatch_due(runtime, None, morning + 18 * MINUTE)["published"] == 0
    wait_for_bus(runtime)
    [message] = collector.of("daily_gcp_costs")
    assert (message.template, message.tenants, message.parameters) == (
        COST_BILLING,
        "*",
        {"date": "yesterday"},
    )
    assert (message.trigger_by, message.trigger_type) == ("scheduler:daily_gcp_costs", "schedule")


def test_a_slot_the_bus_refused_is_published_when_the_tick_is_redelivered(runtime, create, collector):
    schedule = create()
    event = tick(parse_utc(schedule["next_run_at"]) + MINUTE)
    working = runtime.bus
    runtime.bus = LocalBus(runtime.settings.gcp_project_id)
    runtime.bus.close()  # the bus is down: publishing raises
    with pytest.raises(DependencyUnavailable):
        handle_dispatch_event(event)
    runtime.bus = working
    handle_dispatch_event(event)  # Pub/Sub redelivers the tick
    wait_for_bus(runtime)
    assert len(collector.of(schedule["schedule_id"])) == 1


@pytest.mark.parametrize(
    "body",
    [None, {"schema": "convergence.dispatch/v1"}, {"schema": "convergence.schedule/v1", "cadence": CADENCE},
     {"schema": "convergence.dispatch/v1", "cadence": CADENCE, "now": "tomorrow"},
     {"schema": "convergence.dispatch/v1", "cadence": "every-minute"}],
    ids=["not-json", "no-cadence", "other-schema", "bad-now", "unknown-cadence"],
)  # fmt: skip
def test_a_dispatcher_message_that_cannot_be_processed_is_acknowledged_and_starts_nothing(
    runtime, create, collector, body
):
    due = create()["next_run_at"]
    after = (parse_utc(due) + MINUTE).isoformat()  # had the message been processed, the slot would start
    data = b"not json" if body is None else json.dumps({"now": after} | body).encode()
    handle_dispatch_event(dispatcher_event(data))  # returns: acknowledged, never redelivered
    handle_dispatch_event(tick(parse_utc(due) - MINUTE))  # a valid tick before the slot
    wait_for_bus(runtime)
    assert collector.messages == []
    handle_dispatch_event(tick(parse_utc(due) + MINUTE))  # the same schedule does start on a valid tick
    wait_for_bus(runtime)
    assert len(collector.messages) == 1


def test_an_unknown_cadence_is_a_configuration_error(runtime, tenants):
    with pytest.raises(ConfigurationError):
        dispatch_due(runtime, "hourly", dt.datetime.now(dt.UTC))


def test_the_dispatcher_refuses_to_run_before_bootstrap(runtime):
    with pytest.raises(ConfigurationError) as caught:
        dispatch_due(runtime, CADENCE, dt.datetime.now(dt.UTC))
    assert "bootstrap" in caught.value.message


# -- the same SQL on the BigQuery adapter -----------------------------------------------------------------


def test_schedules_and_the_dispatcher_claim_work_on_the_bigquery_adapter(
    tmp_path, bigquery_emulator, root_headers, monkeypatch
):
    project = f"schedules-{uuid.uuid4().hex[:10]}"
    env = {
        "CONVERGENCE_WAREHOUSE": "bigquery",
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
        "GCP_PROJECT_ID": project,
    }
    rt = platform_runtime(tmp_path / "home", env)
    assert isinstance(rt.warehouse, BigQueryWarehouse)
    set_runtime(rt)
    onboard, trigger = function_client("onboard", "onboard"), function_client("trigger", "trigger")
    assert_json(onboard.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    body = {"org_slug": "acme", "company_name": "Acme", "admin_email": "admin@acme.example.com"}
    onboarded = assert_json(
        onboard.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201
    )
    acme = {"X-API-Key": onboarded["api_key"]}
    wait_for_bus(rt)
    rt.bus.close()
    rt.bus = LocalBus(rt.settings.gcp_project_id)  # only the collector listens: this test is about the SQL
    collector = Collector(rt)

    daily = {"template": DRYRUN, "cron": "0 7 * * *", "name": "daily"}
    created = assert_json(trigger.post(path("acme"), headers=acme, json=daily), 201)
    again = trigger.post(path("acme"), headers=acme, json=daily | {"cron": "0 5 * * *"})
    assert_error(again, 409, "schedule_name_taken")
    now = parse_utc(created["next_run_at"]) + MINUTE
    assert sorted(o["published"] for o in dispatch_twice_at_once(rt, now, monkeypatch)) == [0, 1]
    assert dispatch_due(rt, CADENCE, now + 15 * MINUTE)["published"] == 0
    wait_for_bus(rt)
    assert [m.due_at for m in collector.of(created["schedule_id"])] == [created["next_run_at"]]
    deleted = trigger.delete(f"{path('acme')}/{created['schedule_id']}", headers=acme)
    assert assert_json(deleted, 200)["deleted"] is True
    assert assert_json(trigger.get(path("acme"), headers=acme), 200) == {"schedules": []}
