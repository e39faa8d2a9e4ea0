"""The event functions as functions-framework runs them behind a Pub/Sub push subscription.

Each test posts a real structured CloudEvent (cloudevents.conversion.to_structured) whose data is the push
envelope kept in fixtures/pubsub_step_envelope.json, to the function loaded from its main.py.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from pydantic import BaseModel

from common.bus.local import LocalBus
from common.bus.messages import ScheduleMessage, StepMessage, encode
from common.errors import TransientError
from common.processors import registry
from common.runtime import Runtime
from common.services import pipelines
from common.warehouse.sql import table_ref
from tests.conftest import function_client, wait_for_bus

ENVELOPE = Path(__file__).parent / "fixtures" / "pubsub_step_envelope.json"
PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"


class RecordingBus(LocalBus):
    """A bus with no subscribers that remembers what was published."""

    def __init__(self) -> None:
        super().__init__("local-project", workers=1)
        self.published: list[tuple[str, BaseModel, dict[str, str]]] = []

    def publish(self, topic: str, message: BaseModel, attributes: dict[str, str] | None = None) -> str:
        self.published.append((topic, message, dict(attributes or {})))
        return super().publish(topic, message, attributes)


def push_event(
    data: bytes, attributes: dict[str, str], *, topic: str = "convergence-steps", message_id: str = "1"
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a structured CloudEvent carrying one Pub/Sub push message."""
    envelope = json.loads(ENVELOPE.read_text())
    envelope["message"]["data"] = base64.b64encode(data).decode()
    envelope["message"]["attributes"] = attributes
    envelope["message"]["messageId"] = envelope["message"]["message_id"] = message_id
    event = CloudEvent(
        {"type": PUBSUB_EVENT_TYPE, "source": f"//pubsub.googleapis.com/projects/local-project/topics/{topic}",
         "id": message_id, "datacontenttype": "application/json"},
        envelope,
    )  # fmt: skip
    return to_structured(event)


def post(client: Any, data: bytes, attributes: dict[str, str] | None = None, **options: Any) -> Any:
    headers, body = push_event(data, attributes or {}, **options)
    return client.post("/", headers=headers, data=body)


def post_step(client: Any, message: StepMessage, **options: Any) -> Any:
    return post(client, encode(message), message.attributes(), **options)


def step_records(rt: Runtime, tenant: str, run_id: str) -> list[dict[str, Any]]:
    return rt.warehouse.query(
        f"SELECT * FROM {table_ref(tenant, 'step_logs')} WHERE pipeline_logging_id = @run ORDER BY seq",
        {"run": run_id},
    )


def run_statuses(rt: Runtime, tenant: str, run_id: str) -> list[str]:
    rows = rt.warehouse.query(
        f"SELECT status FROM {table_ref(tenant, 'pipeline_runs')} WHERE pipeline_logging_id = @run ORDER BY seq",
        {"run": run_id},
    )
    return [r["status"] for r in rows]


def pending_dryrun(rt: Runtime, tenant: str) -> str:
    run, _ = pipelines.start_run(rt, tenant, "gcp", "example", "dryrun", {}, publish=False)
    assert run.status == "PENDING"
    return run.pipeline_logging_id


@pytest.fixture
def step_execute(runtime: Runtime) -> Any:
    return function_client("step_execute", "step_execute", "cloudevent")


@pytest.fixture
def step_dead_letter(runtime: Runtime) -> Any:
    return function_client("step_dead_letter", "step_execute", "cloudevent")


@pytest.fixture
def trigger_schedules(runtime: Runtime) -> Any:
    return function_client("trigger_schedules", "trigger", "cloudevent")


@pytest.fixture
def recording_bus(runtime: Runtime) -> RecordingBus:
    old, runtime.bus = runtime.bus, RecordingBus()
    old.close()
    return runtime.bus  # type: ignore[return-value]


# -- step_execute ------------------------------------------------------------------------------------
def test_step_event_executes_step_zero_of_a_pending_run_and_publishes_step_one(
    runtime, two_tenants, recording_bus, step_execute
):
    run_id = pending_dryrun(runtime, "acme")

    response = post_step(step_execute, StepMessage(run_id=run_id, tenant_id="acme", step_index=0))

    assert 200 <= response.status_code < 300, response.data
    records = step_records(runtime, "acme", run_id)
    assert [(r["step_index"], r["step_id"], r["status"]) for r in records] == [(0, "write_probe", "COMPLETE")]
    assert run_statuses(runtime, "acme", run_id) == ["PENDING", "RUNNING"]
    probe = runtime.warehouse.query(f"SELECT * FROM {table_ref('acme', 'dryrun_results')}")
    assert [p["pipeline_logging_id"] for p in probe] == [run_id]
    assert recording_bus.published == [
        (runtime.settings.steps_topic, StepMessage(run_id=run_id, tenant_id="acme", step_index=1),
         {"tenant_id": "acme", "run_id": run_id})
    ]  # fmt: skip


def test_same_step_event_posted_twice_leaves_one_set_of_step_records(
    runtime, two_tenants, recording_bus, step_execute
):
    run_id = pending_dryrun(runtime, "acme")
    step_zero = StepMessage(run_id=run_id, tenant_id="acme", step_index=0)

    first = post_step(step_execute, step_zero, message_id="41")
    second = post_step(step_execute, step_zero, message_id="41")

    assert 200 <= first.status_code < 300 and 200 <= second.status_code < 300
    assert [(r["step_index"], r["status"]) for r in step_records(runtime, "acme", run_id)] == [
        (0, "COMPLETE")
    ]
    assert runtime.warehouse.count_rows("acme", "dryrun_results") == 1
    assert run_statuses(runtime, "acme", run_id) == ["PENDING", "RUNNING"]
    assert {m.step_index for _, m, _ in recording_bus.published} == {1}

    # drive the rest of the run by hand, every event twice, as an at-least-once push would
    for index in (1, 2):
        for _ in range(2):
            assert (
                post_step(
                    step_execute, StepMessage(run_id=run_id, tenant_id="acme", step_index=index)
                ).status_code
                < 300
            )
    assert [(r["step_index"], r["status"]) for r in step_records(runtime, "acme", run_id)] == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "SKIPPED"),
    ]
    assert run_statuses(runtime, "acme", run_id) == ["PENDING", "RUNNING", "COMPLETE"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"{definitely not json", id="not-json"),
        pytest.param(b"\x00\xff\xfe", id="binary"),
        pytest.param(b'"just a string"', id="json-string"),
        pytest.param(json.dumps({"schema": "convergence.step/v99", "run_id": "r", "tenant_id": "acme",
                                 "step_index": 0}).encode(), id="unknown-schema"),
        pytest.param(json.dumps({"schema": "convergence.step/v1", "run_id": "r"}).encode(), id="missing-fields"),
        pytest.param(json.dumps({"schema": "convergence.step/v1", "run_id": "r", "tenant_id": "acme",
                                 "step_index": -3}).encode(), id="negative-step"),
        pytest.param(encode(StepMessage(run_id="no-such-run-4711", tenant_id="acme", step_index=0)),
                     id="unknown-run"),
        pytest.param(encode(StepMessage(run_id="no-such-run-4711", tenant_id="nobody_here", step_index=0)),
                     id="unknown-tenant"),
    ],
)  # fmt: skip
def test_malformed_step_event_is_acknowledged_with_2xx(
    runtime, two_tenants, recording_bus, step_execute, data
):
    response = post(step_execute, data, {"tenant_id": "acme"})

    assert 200 <= response.status_code < 300, (response.status_code, response.data[:300])
    assert recording_bus.published == []


def test_push_envelope_without_a_message_is_acknowledged_with_2xx(runtime, recording_bus, step_execute):
    event = CloudEvent(
        {
            "type": PUBSUB_EVENT_TYPE,
            "source": "//pubsub.googleapis.com/projects/local-project/topics/convergence-steps",
        },
        {"subscription": "projects/local-project/subscriptions/convergence-steps-push"},
    )
    headers, body = to_structured(event)

    response = step_execute.post("/", headers=headers, data=body)

    assert 200 <= response.status_code < 300, (response.status_code, response.data[:300])
    assert recording_bus.published == []


def test_transient_step_error_answers_non_2xx_so_pubsub_redelivers(
    runtime, two_tenants, recording_bus, step_execute, monkeypatch
):
    registry.is_registered("gcp.bq_etl")  # load the processor families before patching one entry

    def warehouse_busy(ctx: registry.StepContext) -> registry.StepResult:
        raise TransientError("the warehouse is overloaded, try again")

    monkeypatch.setitem(registry._REGISTRY, "gcp.bq_etl", warehouse_busy)
    run_id = pending_dryrun(runtime, "acme")

    response = post_step(step_execute, StepMessage(run_id=run_id, tenant_id="acme", step_index=0))

    assert not 200 <= response.status_code < 300, response.status_code
    assert [r["status"] for r in step_records(runtime, "acme", run_id)] == ["RETRYING"]
    assert recording_bus.published == []
    assert run_statuses(runtime, "acme", run_id)[-1] == "RUNNING"


# -- step_dead_letter --------------------------------------------------------------------------------
def test_dead_lettered_step_event_fails_the_step_and_the_run(
    runtime, trigger_client, two_tenants, step_dead_letter
):
    run_id = pending_dryrun(runtime, "acme")
    message = StepMessage(run_id=run_id, tenant_id="acme", step_index=0)
    attributes = message.attributes() | {
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceSubscription": "convergence-steps-push",
    }

    response = post(step_dead_letter, encode(message), attributes, topic=runtime.settings.dead_letter_topic)
    assert 200 <= response.status_code < 300, response.data
    wait_for_bus(runtime)

    run = trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=two_tenants["acme"]).json
    assert run["status"] == "FAILED"
    assert "5 delivery attempts" in run["error_message"], run["error_message"]
    assert [s["status"] for s in run["steps"]] == ["FAILED", "SKIPPED", "COMPLETE"]
    assert run_statuses(runtime, "acme", run_id).count("FAILED") == 1


def test_malformed_dead_letter_event_is_acknowledged_with_2xx(runtime, recording_bus, step_dead_letter):
    response = post(step_dead_letter, b"<xml/>", {"CloudPubSubDeadLetterSourceDeliveryCount": "5"})

    assert 200 <= response.status_code < 300, (response.status_code, response.data[:300])
    assert recording_bus.published == []


# -- trigger_schedules -------------------------------------------------------------------------------
def schedule(client: Any, tenants: Any, template: str = "gcp/example/dryrun", **extra: Any) -> Any:
    message = ScheduleMessage(template=template, tenants=tenants, **extra)
    response = post(client, encode(message), message.attributes(), topic="convergence-schedules")
    assert 200 <= response.status_code < 300, (response.status_code, response.data[:300])
    return response


def scheduled_runs(trigger_client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The tenant's runs started by a schedule (onboarding's own dry run was triggered through the API)."""
    response = trigger_client.get("/api/v1/pipelines/runs", headers=headers)
    assert response.status_code == 200, response.json
    runs = response.json["runs"]
    assert all(r["trigger_type"] in ("api", "schedule") for r in runs), runs
    return [r for r in runs if r["trigger_type"] == "schedule"]


def test_schedule_event_starts_a_scheduled_run_for_each_named_tenant(
    runtime, trigger_client, two_tenants, trigger_schedules
):
    schedule(trigger_schedules, ["acme", "globex"], trigger_by="nightly-dispatcher")
    wait_for_bus(runtime)

    for tenant, headers in two_tenants.items():
        runs = scheduled_runs(trigger_client, headers)
        assert len(runs) == 1, (tenant, runs)
        assert runs[0]["tenant_id"] == tenant
        assert runs[0]["pipeline_id"] == f"{tenant}-gcp-example-dryrun"
        assert runs[0]["trigger_type"] == "schedule"
        assert runs[0]["trigger_by"] == "nightly-dispatcher"
        assert runs[0]["status"] == "COMPLETE"


def test_schedule_event_for_all_tenants_reaches_every_onboarded_tenant(
    runtime, trigger_client, onboard_org, trigger_schedules
):
    tenants = {org: {"X-API-Key": onboard_org(org)} for org in ("acme", "globex", "initech")}

    schedule(trigger_schedules, "*")
    wait_for_bus(runtime)

    for tenant, headers in tenants.items():
        runs = scheduled_runs(trigger_client, headers)
        assert [(r["tenant_id"], r["status"]) for r in runs] == [(tenant, "COMPLETE")]


def test_schedule_event_ignores_unknown_tenant_names(runtime, trigger_client, two_tenants, trigger_schedules):
    schedule(trigger_schedules, ["nobody_here", "acme", "globex_typo"])
    wait_for_bus(runtime)

    assert [r["tenant_id"] for r in scheduled_runs(trigger_client, two_tenants["acme"])] == ["acme"]
    assert scheduled_runs(trigger_client, two_tenants["globex"]) == []
    assert not runtime.warehouse.dataset_exists("nobody_here")


def test_malformed_schedule_event_is_acknowledged_and_starts_nothing(
    runtime, trigger_client, two_tenants, trigger_schedules
):
    for data in (b"not json at all", json.dumps({"schema": "convergence.schedule/v1", "template": "../etc"}).encode(),
                 encode(StepMessage(run_id="r1", tenant_id="acme", step_index=0))):  # fmt: skip
        response = post(trigger_schedules, data, {}, topic="convergence-schedules")
        assert 200 <= response.status_code < 300, (data, response.status_code)
    wait_for_bus(runtime)

    assert scheduled_runs(trigger_client, two_tenants["acme"]) == []
