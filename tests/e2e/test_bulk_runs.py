"""Bulk runs: POST /api/v1/admin/runs/bulk fans one template out to many tenants, GET tells where it stands.

Through the onboard function (it serves /api/v1/admin/*) on the embedded platform, through the CLI in-process
and against a loopback server, and once through the Pub/Sub emulator with the trigger function's CloudEvent
entry point receiving the chunks.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from typer.testing import CliRunner
from werkzeug.serving import make_server

from bench.fanout import seed_tenants
from common.bus.messages import PUBSUB_EVENT_TYPE, ScheduleMessage
from common.bus.pubsub import publisher_client, subscriber_client, subscription_path, topic_path
from common.metadata import bulk_runs, runs
from common.metadata.runs import RunRecord
from common.runtime import Runtime
from common.settings import get_settings, reset_settings
from common.warehouse.sql import table_ref
from common.wiring import build_runtime, set_runtime, wsgi_app
from convergence.cli import app as cli
from tests.conftest import ROOT_KEY, function_client, wait_for_bus
from tests.e2e.bulk_support import EXPORT_ROW, give_integration
from tests.e2e.support import assert_error, assert_json

ROOT = {"X-CA-Root-Key": ROOT_KEY}
BULK = "/api/v1/admin/runs/bulk"
DRYRUN = "gcp/example/dryrun"
COST = "gcp/cost/cost_billing"
NO_COUNTS = {"PENDING": 0, "RUNNING": 0, "COMPLETE": 0, "FAILED": 0, "SKIPPED": 0}


def start(client: Any, body: dict[str, Any], status: int = 202, **headers: str) -> dict[str, Any]:
    return assert_json(client.post(BULK, headers=ROOT | headers, json=body), status)


def status_of(client: Any, bulk_id: str) -> dict[str, Any]:
    return assert_json(client.get(f"{BULK}/{bulk_id}", headers=ROOT), 200)


def bulk_runs_of(rt: Runtime, tenant: str) -> list[RunRecord]:
    return [r for r in runs.latest_runs(rt.warehouse, tenant, limit=100) if r.trigger_type == "bulk"]


class Published:
    """Every schedules message the bus is handed from now on."""

    def __init__(self, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.messages: list[Any] = []
        topic = rt.settings.schedules_topic
        publish, publish_many = rt.bus.publish, rt.bus.publish_many

        def one(to: str, message: Any, attributes: dict[str, str] | None = None) -> str:
            if to == topic:
                self.messages.append(message)
            return publish(to, message, attributes)

        def many(to: str, messages: Any) -> list[str]:
            before = len(self.messages)
            ids = publish_many(to, messages)
            if to == topic and len(self.messages) == before:  # a bus whose batch is not one publish each
                self.messages.extend(messages)
            return ids

        monkeypatch.setattr(rt.bus, "publish", one)
        monkeypatch.setattr(rt.bus, "publish_many", many)


@pytest.fixture
def published(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Published:
    return Published(runtime, monkeypatch)


@pytest.fixture
def bootstrapped(onboard_client: Any) -> Any:
    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=ROOT, json={}), 200)
    return onboard_client


@pytest.fixture
def acme(onboard_org: Callable[[str], str], runtime: Runtime) -> dict[str, str]:
    key = {"X-API-Key": onboard_org("acme")}
    wait_for_bus(runtime)
    return key


# -- sizes: none, one, many ----------------------------------------------------------------------------------


def test_a_bulk_for_every_tenant_of_an_empty_platform_is_accepted_publishes_nothing_and_counts_nothing(
    bootstrapped: Any, published: Published
) -> None:
    accepted = start(bootstrapped, {"template": DRYRUN, "tenants": "*"})

    assert (accepted["tenants"], accepted["chunks"], accepted["replayed"]) == (0, 0, False)
    assert published.messages == []
    status = status_of(bootstrapped, accepted["bulk_id"])
    assert status["counts"] == NO_COUNTS and status["done"] is True
    assert (status["failures"], status["skipped"]) == ([], [])


def test_a_bulk_for_one_tenant_gives_it_one_run_attributed_to_the_bulk(
    acme: dict[str, str], onboard_client: Any, trigger_client: Any, runtime: Runtime, published: Published
) -> None:
    accepted = start(
        onboard_client, {"template": DRYRUN, "tenants": ["acme"], "parameters": {"date": "2025-11-15"}}
    )
    wait_for_bus(runtime)

    assert (accepted["tenants"], accepted["chunks"], accepted["parameters"]) == (1, 1, {"date": "2025-11-15"})
    [message] = published.messages
    assert (message.bulk_id, message.trigger_type, message.tenants) == (accepted["bulk_id"], "bulk", ["acme"])
    [run] = bulk_runs_of(runtime, "acme")
    assert (run.bulk_id, run.status, run.trigger_by) == (
        accepted["bulk_id"],
        "COMPLETE",
        f"bulk:{accepted['bulk_id']}",
    )
    assert run.parameter_values["date"] == "2025-11-15"
    listed = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=acme), 200)["runs"]
    assert [
        (r["trigger_type"], r["trigger_by"])
        for r in listed
        if r["pipeline_logging_id"] == run.pipeline_logging_id
    ] == [("bulk", f"bulk:{accepted['bulk_id']}")]
    status = status_of(onboard_client, accepted["bulk_id"])
    assert status["counts"] == NO_COUNTS | {"COMPLETE": 1} and status["done"] is True
    assert (status["template"], status["tenants"], status["chunks"]) == (DRYRUN, 1, 1)


def test_a_bulk_for_1200_tenants_fans_out_in_chunks_one_run_each_and_its_status_reads_few_tables(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FANOUT_CHUNK_SIZE", "250")
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    tenants = seed_tenants(rt, 1200)  # control rows and a dataset with pipeline_runs each, in seconds
    step_zero: list[Any] = []
    rt.bus._subscriptions[rt.settings.steps_topic] = []  # type: ignore[attr-defined]  # count, do not execute
    rt.bus.subscribe(rt.settings.steps_topic, step_zero.append, name="counted-steps")  # type: ignore[attr-defined]
    published = Published(rt, monkeypatch)
    client = wsgi_app("onboard").test_client()

    began = time.perf_counter()
    accepted = start(client, {"template": DRYRUN, "tenants": "*"})
    wait_for_bus(rt, timeout=240)
    fanned = time.perf_counter() - began

    assert (accepted["tenants"], accepted["chunks"]) == (1200, 5)
    assert [len(m.tenants) for m in published.messages] == [250] * 4 + [200]
    assert len(step_zero) == 1200
    outcomes = bulk_runs.tenant_outcomes(rt, accepted["bulk_id"], since=rt_since(rt, accepted["bulk_id"]))
    assert [o["tenant_id"] for o in outcomes] == tenants and {o["status"] for o in outcomes} == {"PENDING"}
    queries = count_queries(rt, monkeypatch)
    began = time.perf_counter()
    assert status_of(client, accepted["bulk_id"])["counts"] == NO_COUNTS | {"PENDING": 1200}
    first_read = time.perf_counter() - began
    assert len(queries) == 2 + 3  # the bulk, its tenants' outcomes, one query per 500 tenants' pipeline_runs

    for outcome in outcomes:  # every run ends
        [record] = runs.run_records(rt.warehouse, outcome["tenant_id"], outcome["pipeline_logging_id"])
        runs.append_run_status(rt.warehouse, outcome["tenant_id"], record, "COMPLETE")
    assert status_of(client, accepted["bulk_id"])["counts"] == NO_COUNTS | {"COMPLETE": 1200}
    queries.clear()
    began = time.perf_counter()
    done = status_of(client, accepted["bulk_id"])
    done_read = time.perf_counter() - began
    assert done["counts"] == NO_COUNTS | {"COMPLETE": 1200} and done["done"] is True
    assert len(queries) == 2  # the ends are recorded: no tenant table is read again
    with capsys.disabled():
        print(f"\n1,200 tenants: fan-out {fanned:.1f} s; status read {first_read:.2f} s while running,"
              f" {done_read:.2f} s once done")  # fmt: skip


def rt_since(rt: Runtime, bulk_id: str) -> Any:
    bulk = bulk_runs.get_bulk(rt, bulk_id)
    assert bulk is not None
    return bulk["created_at"]


def count_queries(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every warehouse query from now on."""
    seen: list[str] = []
    query = rt.warehouse.query

    def counted(sql: str, params: Any = None) -> list[dict[str, Any]]:
        seen.append(sql)
        return query(sql, params)

    monkeypatch.setattr(rt.warehouse, "query", counted)
    return seen


def test_a_tenant_whose_run_table_predates_bulk_runs_gets_their_column_with_its_first_one(
    acme: dict[str, str], onboard_client: Any, runtime: Runtime
) -> None:
    runtime.warehouse.execute(f"ALTER TABLE {table_ref('acme', 'pipeline_runs')} DROP COLUMN bulk_id")
    assert "bulk_id" not in runtime.warehouse.table_columns("acme", "pipeline_runs")

    accepted = start(onboard_client, {"template": DRYRUN, "tenants": ["acme"]})
    wait_for_bus(runtime)

    assert [r.bulk_id for r in bulk_runs_of(runtime, "acme")] == [accepted["bulk_id"]]
    assert status_of(onboard_client, accepted["bulk_id"])["counts"] == NO_COUNTS | {"COMPLETE": 1}


# -- at-least-once delivery and repeated requests -------------------------------------------------------------


def test_a_redelivered_chunk_never_starts_a_tenants_run_twice(
    onboard_org: Callable[[str], str], onboard_client: Any, runtime: Runtime, published: Published
) -> None:
    for org in ("acme", "globex"):
        onboard_org(org)
    wait_for_bus(runtime)
    accepted = start(onboard_client, {"template": DRYRUN, "tenants": "*"})
    wait_for_bus(runtime)
    [chunk] = published.messages

    # Pub/Sub delivers the chunk again.
    runtime.bus.publish(runtime.settings.schedules_topic, chunk, chunk.attributes())
    wait_for_bus(runtime)

    for org in ("acme", "globex"):
        assert [r.bulk_id for r in bulk_runs_of(runtime, org)] == [accepted["bulk_id"]], org
    assert status_of(onboard_client, accepted["bulk_id"])["counts"] == NO_COUNTS | {"COMPLETE": 2}


def test_two_identical_bulk_requests_are_two_bulks_each_with_its_own_runs(
    acme: dict[str, str], onboard_client: Any, runtime: Runtime
) -> None:
    body = {"template": DRYRUN, "tenants": ["acme"], "parameters": {"date": "2025-11-15"}}
    first = start(onboard_client, body)
    wait_for_bus(runtime)
    second = start(onboard_client, body)
    wait_for_bus(runtime)

    assert first["bulk_id"] != second["bulk_id"]
    assert sorted(r.bulk_id for r in bulk_runs_of(runtime, "acme")) == sorted(
        [first["bulk_id"], second["bulk_id"]]
    )
    for accepted in (first, second):
        assert status_of(onboard_client, accepted["bulk_id"])["counts"] == NO_COUNTS | {"COMPLETE": 1}


def test_an_idempotency_key_names_one_bulk_whose_repeat_starts_nothing_more(
    acme: dict[str, str], onboard_client: Any, runtime: Runtime
) -> None:
    body = {"template": DRYRUN, "tenants": "*", "parameters": {"date": "2025-11-15"}}
    first = start(onboard_client, body, **{"Idempotency-Key": "nightly-2025-11-15"})
    wait_for_bus(runtime)
    again = start(onboard_client, body, **{"Idempotency-Key": "nightly-2025-11-15"})
    wait_for_bus(runtime)

    assert again["bulk_id"] == first["bulk_id"] and again["replayed"] is True
    assert len(bulk_runs_of(runtime, "acme")) == 1
    other = body | {"parameters": {"date": "2025-11-16"}}
    refused = onboard_client.post(BULK, headers=ROOT | {"Idempotency-Key": "nightly-2025-11-15"}, json=other)
    assert_error(refused, 422, "idempotency_key_reused")


# -- refusals --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        ({"template": "gcp/cost/nope", "tenants": "*"}, "template_not_found", "gcp/cost/nope"),
        (
            {"template": COST, "tenants": "*", "parameters": {"min_rows": "many"}},
            "invalid_parameter",
            "min_rows",
        ),
        ({"template": COST, "tenants": "*", "parameters": {"colour": "red"}}, "invalid_parameter", "colour"),
        (
            {"template": COST, "tenants": "*", "parameters": {"date": "2025-13-40"}},
            "invalid_parameter",
            "date",
        ),
        ({"template": DRYRUN, "tenants": ["acme", "nobody"]}, "unknown_tenant", "nobody"),
    ],
    ids=["unknown-template", "bad-type", "undeclared", "bad-date", "inactive-tenant"],
)
def test_a_bulk_that_cannot_start_is_400_naming_why_and_nothing_is_recorded_or_published(
    acme: dict[str, str], onboard_client: Any, runtime: Runtime, published: Published,
    body: dict[str, Any], code: str, named: str,
) -> None:  # fmt: skip
    error = assert_error(onboard_client.post(BULK, headers=ROOT, json=body), 400, code)

    assert named in error["message"]
    assert published.messages == []
    assert runtime.warehouse.count_rows(runtime.settings.control_dataset, "bulk_runs") == 0


def test_a_bulk_body_that_is_not_one_is_422(bootstrapped: Any, published: Published) -> None:
    for body in (
        {"template": DRYRUN},
        {"template": DRYRUN, "tenants": "acme"},
        {"template": DRYRUN, "tenants": ["Bad!"]},
    ):
        assert_error(bootstrapped.post(BULK, headers=ROOT, json=body), 422)
    assert published.messages == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-CA-Root-Key": "not-the-root-key"}, "tenant"],
    ids=["no-key", "wrong-root-key", "tenant-key"],
)
def test_the_bulk_routes_take_only_the_root_key(
    acme: dict[str, str], onboard_client: Any, published: Published, headers: Any
) -> None:
    given = acme if headers == "tenant" else headers
    assert_error(onboard_client.post(BULK, headers=given, json={"template": DRYRUN, "tenants": "*"}), 401)
    bulk_id = start(onboard_client, {"template": DRYRUN, "tenants": []})["bulk_id"]
    assert_error(onboard_client.get(f"{BULK}/{bulk_id}", headers=given), 401)
    assert published.messages == []


def test_an_unknown_bulk_is_404(bootstrapped: Any) -> None:
    for bulk_id in (str(uuid.uuid4()), "not-a-bulk-id"):
        assert_error(bootstrapped.get(f"{BULK}/{bulk_id}", headers=ROOT), 404, "bulk_not_found")


def test_before_bootstrap_a_bulk_is_409_and_nothing_is_published(
    onboard_client: Any, published: Published
) -> None:
    assert_error(onboard_client.post(BULK, headers=ROOT, json={"template": DRYRUN, "tenants": "*"}), 409)
    assert published.messages == []


# -- tenants that cannot run the template ---------------------------------------------------------------------


@pytest.fixture
def three_kinds(onboard_org: Callable[[str], str], trigger_client: Any, runtime: Runtime) -> None:
    """`integrated` has a gcp integration, `uploaded` rows in gcp_billing_export_v1, `bare` neither."""
    keys = {org: {"X-API-Key": onboard_org(org)} for org in ("integrated", "uploaded", "bare")}
    give_integration(runtime, "integrated", "gcp")
    upload = trigger_client.post("/api/v1/data/uploaded/uploads/gcp_billing_export_v1", headers=keys["uploaded"],
                                 data=EXPORT_ROW, content_type="application/x-ndjson")  # fmt: skip
    assert_json(upload, 201)
    wait_for_bus(runtime)


@pytest.mark.parametrize("tenants", ["*", ["bare", "integrated", "uploaded"]], ids=["every-tenant", "listed"])
def test_tenants_that_cannot_run_the_template_are_skipped_with_the_reason_not_given_runs(
    three_kinds: None, onboard_client: Any, runtime: Runtime, tenants: Any
) -> None:
    accepted = start(
        onboard_client, {"template": COST, "tenants": tenants, "parameters": {"date": "2026-11-21"}}
    )
    wait_for_bus(runtime)

    assert accepted["tenants"] == 3
    assert bulk_runs_of(runtime, "bare") == []
    assert [len(bulk_runs_of(runtime, t)) for t in ("integrated", "uploaded")] == [1, 1]
    status = status_of(onboard_client, accepted["bulk_id"])
    assert status["counts"]["SKIPPED"] == 1 and sum(status["counts"].values()) == 3 and status["done"]
    assert status["skipped"] == [
        {"tenant_id": "bare", "reason": "no gcp integration and no rows in gcp_billing_export_v1"}
    ]
    assert {f["tenant_id"] for f in status["failures"]} <= {"integrated"}  # its integration is a stand-in


# -- the CLI ------------------------------------------------------------------------------------------------------


def convergence(*args: str) -> Any:
    return CliRunner().invoke(cli, ["runs", *args], env={"COLUMNS": "200"})


def test_the_cli_starts_a_bulk_in_process_waits_for_it_and_shows_its_status(
    onboard_org: Callable[[str], str], runtime: Runtime
) -> None:
    for org in ("acme", "globex"):
        onboard_org(org)
    wait_for_bus(runtime)

    waited = convergence("bulk", "--template", DRYRUN, "--tenants", "*", "--param", "date=2025-11-15",
                         "--wait", "--interval", "0.2", "--json")  # fmt: skip
    assert waited.exit_code == 0, waited.output
    status = json.loads(waited.stdout)
    assert status["counts"] == NO_COUNTS | {"COMPLETE": 2} and status["parameters"] == {"date": "2025-11-15"}

    shown = convergence("bulk-status", status["bulk_id"])
    assert shown.exit_code == 0, shown.output
    assert f"bulk {status['bulk_id']} of {DRYRUN} (done)" in shown.stdout
    assert "COMPLETE" in shown.stdout
    listed = convergence("bulk", "--template", DRYRUN, "--tenants", "acme, globex")
    assert listed.exit_code == 0 and "for 2 tenants in 1 chunks" in listed.stdout, listed.output

    refused = convergence("bulk", "--template", "gcp/cost/nope", "--tenants", "*")
    assert refused.exit_code == 2 and "no runnable template gcp/cost/nope" in refused.stderr
    malformed = convergence("bulk", "--template", DRYRUN, "--tenants", "*", "--param", "date")
    assert malformed.exit_code == 2 and "NAME=VALUE" in malformed.stderr
    unknown = convergence("bulk-status", str(uuid.uuid4()))
    assert unknown.exit_code == 2 and "no such bulk run" in unknown.stderr


@pytest.fixture
def served(runtime: Runtime) -> Iterator[str]:
    """`convergence serve`'s application on a loopback port, on this test's platform."""
    server = make_server("127.0.0.1", 0, wsgi_app("both"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}"
    server.shutdown()
    thread.join(5)


def test_the_cli_runs_a_bulk_against_a_url_with_the_root_key(
    acme: dict[str, str], served: str, runtime: Runtime
) -> None:
    started = convergence("bulk", "--template", DRYRUN, "--tenants", "acme", "--url", served, "--root-key", ROOT_KEY,
                          "--json")  # fmt: skip
    assert started.exit_code == 0, started.output
    bulk_id = json.loads(started.stdout)["bulk_id"]
    wait_for_bus(runtime)

    shown = convergence("bulk-status", bulk_id, "--url", served, "--root-key", ROOT_KEY, "--wait", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["counts"] == NO_COUNTS | {"COMPLETE": 1}
    wrong = convergence("bulk-status", bulk_id, "--url", served, "--root-key", "not-the-root-key")
    assert wrong.exit_code == 2 and "401" in wrong.stderr


# -- through the Pub/Sub emulator -----------------------------------------------------------------------------


def pull(subscriber: Any, subscription: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """`expected` messages pulled (and acknowledged) from a pull subscription."""
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(found) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages]
            )
            found.extend(m.message for m in response.received_messages)
    return found


def push_event(message: Any, topic: str) -> tuple[dict[str, str], bytes]:
    """The structured CloudEvent a push subscription hands the trigger function for a pulled message."""
    data = {
        "message": {"data": base64.b64encode(message.data).decode(), "attributes": dict(message.attributes),
                    "messageId": message.message_id, "publishTime": "2026-01-01T00:00:00Z"},
        "subscription": f"{topic}-push",
    }  # fmt: skip
    event = CloudEvent({"type": PUBSUB_EVENT_TYPE, "source": f"//pubsub.googleapis.com/{topic}",
                        "id": message.message_id, "datacontenttype": "application/json"}, data)  # fmt: skip
    return to_structured(event)


def test_a_bulk_reaches_the_trigger_function_through_the_pubsub_emulator_in_chunks(
    pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = f"bulk-{uuid.uuid4().hex[:10]}"
    for name, value in {"CONVERGENCE_BUS": "pubsub", "PUBSUB_EMULATOR_HOST": pubsub_emulator,
                        "GCP_PROJECT_ID": project, "FANOUT_CHUNK_SIZE": "2"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    settings = rt.settings
    publisher, subscriber = publisher_client(pubsub_emulator), subscriber_client(pubsub_emulator)
    pulls = {}
    for topic in (settings.dead_letter_topic, settings.steps_topic, settings.schedules_topic):
        publisher.create_topic(name=topic_path(project, topic))
        pulls[topic] = subscription_path(project, f"{topic}-pull")
        subscriber.create_subscription(name=pulls[topic], topic=topic_path(project, topic))
    tenants = seed_tenants(rt, 3)
    onboard = function_client("onboard", "onboard")
    trigger_schedules = function_client("trigger_schedules", "trigger", "cloudevent")
    try:
        accepted = start(onboard, {"template": DRYRUN, "tenants": "*"})
        chunks = pull(subscriber, pulls[settings.schedules_topic], 2)

        assert (accepted["tenants"], accepted["chunks"]) == (3, 2)
        assert sorted(dict(m.attributes)["chunk"] for m in chunks) == ["0", "1"]
        assert {dict(m.attributes)["bulk_id"] for m in chunks} == {accepted["bulk_id"]}
        messages = [ScheduleMessage.model_validate_json(m.data) for m in chunks]
        assert sorted(t for m in messages for t in m.tenants) == tenants
        assert {(m.trigger_type, m.bulk_id) for m in messages} == {("bulk", accepted["bulk_id"])}
        for chunk in chunks + chunks[:1]:  # the first chunk is delivered twice
            headers, body = push_event(chunk, topic_path(project, settings.schedules_topic))
            assert trigger_schedules.post("/", headers=headers, data=body).status_code == 200
        steps = pull(subscriber, pulls[settings.steps_topic], 3)
        assert len(steps) == 3 and not pull(subscriber, pulls[settings.steps_topic], 1, timeout=3)
        assert {dict(m.attributes)["tenant_id"] for m in steps} == set(tenants)
        assert [len(bulk_runs_of(rt, t)) for t in tenants] == [1, 1, 1]
        assert status_of(onboard, accepted["bulk_id"])["counts"] == NO_COUNTS | {"PENDING": 3}
    finally:
        for topic, subscription in pulls.items():
            subscriber.delete_subscription(subscription=subscription)
            publisher.delete_topic(topic=topic_path(project, topic))
        subscriber.close()
        rt.bus.close()


# -- the same SQL on the BigQuery adapter -----------------------------------------------------------------------


def test_a_bulk_is_recorded_started_skipped_and_counted_on_the_bigquery_adapter(
    bigquery_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = f"bulk-{uuid.uuid4().hex[:10]}"
    for name, value in {"CONVERGENCE_WAREHOUSE": "bigquery", "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
                        "GCP_PROJECT_ID": project}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    onboard = function_client("onboard", "onboard")
    assert_json(onboard.post("/api/v1/admin/bootstrap", headers=ROOT, json={}), 200)
    for org in ("acme", "bare"):
        body = {"org_slug": org, "company_name": org, "admin_email": f"admin@{org}.example.com"}
        assert_json(onboard.post("/api/v1/organizations/onboard", headers=ROOT, json=body), 201)
    wait_for_bus(rt, timeout=120)
    give_integration(rt, "acme", "gcp")

    dryrun = start(onboard, {"template": DRYRUN, "tenants": "*", "parameters": {"date": "2025-11-15"}})
    cost = start(onboard, {"template": COST, "tenants": "*", "parameters": {"date": "2025-11-15"}})
    # No dataset has aws_cur_raw yet (a load creates it): readiness looks each one up.
    cur = start(onboard, {"template": "aws/cost/cur_focus", "tenants": ["acme", "bare"]})
    wait_for_bus(rt, timeout=240)

    assert status_of(onboard, dryrun["bulk_id"])["counts"] == NO_COUNTS | {"COMPLETE": 2}
    counted = status_of(onboard, cost["bulk_id"])
    assert counted["skipped"] == [
        {"tenant_id": "bare", "reason": "no gcp integration and no rows in gcp_billing_export_v1"}
    ]
    assert counted["counts"]["SKIPPED"] == 1 and counted["done"] is True
    assert status_of(onboard, cur["bulk_id"])["counts"] == NO_COUNTS | {"SKIPPED": 2}
    assert {r.bulk_id for r in bulk_runs_of(rt, "bare")} == {dryrun["bulk_id"]}
    assert status_of(onboard, dryrun["bulk_id"])["counts"] == NO_COUNTS | {"COMPLETE": 2}  # from the records
