"""The trigger function over HTTP (CONTRACT §2): runs, status, templates, data uploads and tables, errors.

Requests go through functions-framework's test client of functions/trigger/main.py. Where a run must stay
"in flight", the runtime's bus is replaced by a LocalBus without subscribers, so nothing executes it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.bus.local import LocalBus
from common.crypto.api_keys import generate_api_key
from common.services import auth_throttle
from common.settings import get_settings, reset_settings
from common.wiring import build_runtime, set_runtime
from tests.conftest import ROOT_KEY, function_client, wait_for_bus
from tests.e2e.support import assert_error, assert_json, runtime_in

# CONTRACT §2: the routes the trigger function serves, with their methods.
TRIGGER_ROUTES = {
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("post", "/api/v1/pipelines/run/{org}/{provider}/{domain}/{template}"),
    ("get", "/api/v1/pipelines/runs/{pipeline_logging_id}"),
    ("get", "/api/v1/pipelines/status/{org}/{pipeline_logging_id}"),
    ("get", "/api/v1/pipelines/runs"),
    ("get", "/api/v1/pipelines/templates"),
    ("post", "/api/v1/data/{org}/uploads/{table}"),
    ("get", "/api/v1/data/{org}/tables"),
    ("get", "/api/v1/data/{org}/tables/{table}"),
    ("get", "/api/v1/costs/{org}/summary"),
    ("post", "/api/v1/schedules/{org}"),
    ("get", "/api/v1/schedules/{org}"),
    ("delete", "/api/v1/schedules/{org}/{schedule_id}"),
}
PARAM = re.compile(r"\{[a-z_]+\}")
RUN_FIELDS = {
    "pipeline_logging_id",
    "pipeline_id",
    "tenant_id",
    "status",
    "trigger_type",
    "trigger_by",
    "start_time",
    "end_time",
    "duration_ms",
    "parameters",
    "error_message",
    "steps",
}
STEP_FIELDS = {
    "step_id",
    "name",
    "ps_type",
    "status",
    "start_time",
    "end_time",
    "duration_ms",
    "rows_processed",
    "error_message",
}
RUN_STATUSES = {"PENDING", "RUNNING", "COMPLETE", "FAILED"}
DRYRUN = "/api/v1/pipelines/run/acme/gcp/example/dryrun"
COST_BILLING = "/api/v1/pipelines/run/acme/gcp/cost/cost_billing"
ROWS = [
    {"service": "compute", "cost": 1.5, "day": "2024-05-01"},
    {"service": "storage", "cost": 2.25, "day": "2024-05-01"},
    {"service": "network", "cost": 0.5, "day": "2024-05-02"},
]
SHARED_ROWS = [{"sku": f"sku_{i}", "amount": i * 10} for i in range(5)]


# -- helpers ---------------------------------------------------------------------------------------






def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    header = ",".join(rows[0])
    return ("\n".join([header, *(",".join(str(v) for v in row.values()) for row in rows)]) + "\n").encode()


def ndjson_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


FORMATS: dict[str, tuple[str, Callable[[list[dict[str, Any]]], bytes]]] = {
    "csv": ("text/csv", csv_bytes),
    "ndjson": ("application/x-ndjson", ndjson_bytes),
    "parquet": ("application/vnd.apache.parquet", parquet_bytes),
}


def upload(
    client: Any,
    headers: dict[str, str],
    table: str,
    rows: list[dict[str, Any]],
    fmt: str = "csv",
    query: str = "",
    org: str = "acme",
) -> Any:
    content_type, encode = FORMATS[fmt]
    return client.post(
        f"/api/v1/data/{org}/uploads/{table}{query}",
        headers=headers,
        data=encode(rows),
        content_type=content_type,
    )


def table_rows(client: Any, headers: dict[str, str], table: str, org: str = "acme") -> list[dict[str, Any]]:
    body = assert_json(client.get(f"/api/v1/data/{org}/tables/{table}?limit=1000", headers=headers), 200)
    assert body["next_offset"] is None
    return body["rows"]


def table_listing(client: Any, headers: dict[str, str], org: str = "acme") -> dict[str, int]:
    tables = assert_json(client.get(f"/api/v1/data/{org}/tables", headers=headers), 200)["tables"]
    for table in tables:
        assert set(table) >= {"name", "rows"}
    return {t["name"]: t["rows"] for t in tables}


def assert_run_object(run: dict[str, Any]) -> None:
    assert set(run) >= RUN_FIELDS, RUN_FIELDS - set(run)
    assert run["status"] in RUN_STATUSES
    assert run["trigger_type"] in {"api", "schedule", "bulk"}
    assert isinstance(run["parameters"], dict)
    assert isinstance(run["steps"], list)
    for step in run["steps"]:
        assert set(step) >= STEP_FIELDS, STEP_FIELDS - set(step)


def platform_state(runtime: Any) -> dict[str, Any]:
    """Every dataset's tables and row counts: what a refused request must leave untouched."""
    wh = runtime.warehouse
    return {
        dataset: {t: wh.count_rows(dataset, t) for t in wh.list_tables(dataset)}
        for dataset in ("organizations", "acme", "globex")
        if wh.dataset_exists(dataset)
    }


def silence_bus(runtime: Any) -> None:
    """Nothing consumes step messages any more: accepted runs stay PENDING, i.e. in flight."""
    runtime.bus.close()
    runtime.bus = LocalBus(runtime.settings.gcp_project_id)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _shared_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """One platform with acme (holding a 5-row table) and globex, shared by cases that must change nothing."""
    rt = runtime_in(tmp_path_factory.mktemp("shared") / "home")
    silence_bus(rt)
    set_runtime(rt)
    try:
        onboard, trigger = function_client("onboard", "onboard"), function_client("trigger", "trigger")
        root = {"X-CA-Root-Key": ROOT_KEY}
        assert_json(onboard.post("/api/v1/admin/bootstrap", headers=root, json={}), 200)
        keys = {}
        for org in ("acme", "globex"):
            body = {"org_slug": org, "company_name": org.title(), "admin_email": f"admin@{org}.example.com"}
            keys[org] = {
                "X-API-Key": assert_json(
                    onboard.post("/api/v1/organizations/onboard", headers=root, json=body), 201
                )["api_key"]
            }
        assert_json(upload(trigger, keys["acme"], "acme_costs", SHARED_ROWS), 201)
    finally:
        set_runtime(None)
    yield SimpleNamespace(rt=rt, onboard=onboard, trigger=trigger, root=root, **keys)
    rt.close()


@pytest.fixture
def shared(_shared_platform: SimpleNamespace, clean_environment: None) -> Iterator[SimpleNamespace]:
    """The shared platform installed for this test; afterwards its state must be exactly as before.

    Each test is a client of its own: the failed authentications earlier tests made are forgotten (they
    would otherwise add up to the per-client throttle, which tests/e2e/test_auth_throttle.py covers)."""
    _shared_platform.rt.caches.pop(auth_throttle.CACHE_KEY, None)
    set_runtime(_shared_platform.rt)
    before = platform_state(_shared_platform.rt)
    yield _shared_platform
    try:
        assert platform_state(_shared_platform.rt) == before, "a refused request changed the platform"
    finally:
        set_runtime(None)


@pytest.fixture
def quiet(runtime: Any) -> Any:
    """The test's runtime with a bus nobody listens to."""
    silence_bus(runtime)
    return runtime


@pytest.fixture
def acme(onboard_org: Callable[[str], str]) -> dict[str, str]:
    return {"X-API-Key": onboard_org("acme")}


# -- health and OpenAPI ----------------------------------------------------------------------------


def test_health_answers_ok_without_a_key(trigger_client):
    assert assert_json(trigger_client.get("/health"), 200)["status"] == "ok"


def test_openapi_document_lists_exactly_the_trigger_routes_of_the_contract(trigger_client):
    doc = assert_json(trigger_client.get("/openapi.json"), 200)
    assert str(doc["openapi"]).startswith("3.")
    documented = {
        (method, PARAM.sub("{}", path)) for path, operations in doc["paths"].items() for method in operations
    }
    assert documented == {(method, PARAM.sub("{}", path)) for method, path in TRIGGER_ROUTES}


def test_every_documented_trigger_operation_is_really_served_and_guarded(trigger_client):
    doc = assert_json(trigger_client.get("/openapi.json"), 200)
    for path, operations in doc["paths"].items():
        concrete = PARAM.sub("x_y", path.replace("{org}", "acme"))
        for method in operations:
            response = getattr(trigger_client, method)(concrete)
            if path == "/docs":
                assert (response.status_code, response.mimetype) == (200, "text/html")
            elif path in ("/health", "/openapi.json"):
                assert_json(response, 200)
            else:
                assert_error(response, 401)
            assert str(response.status_code) in operations[method]["responses"], (method, path)


DOCUMENTED_STATUSES = {  # statuses these tests see each route answer with
    ("post", "/api/v1/pipelines/run/{org}/{provider}/{domain}/{template}"): {
        202,
        400,
        401,
        403,
        404,
        409,
        413,
        422,
    },
    ("get", "/api/v1/pipelines/runs/{run_id}"): {200, 401, 404},
    ("get", "/api/v1/pipelines/status/{org}/{run_id}"): {200, 401, 403, 404},
    ("get", "/api/v1/pipelines/runs"): {200, 400, 401},
    ("get", "/api/v1/pipelines/templates"): {200, 401},
    ("post", "/api/v1/data/{org}/uploads/{table}"): {201, 400, 401, 403, 413, 415},
    ("get", "/api/v1/data/{org}/tables"): {200, 401, 403},
    ("get", "/api/v1/data/{org}/tables/{table}"): {200, 400, 401, 403, 404},
}


def test_openapi_document_lists_every_status_and_input_the_routes_use(trigger_client):
    doc = assert_json(trigger_client.get("/openapi.json"), 200)
    paths = {PARAM.sub("{}", path): operations for path, operations in doc["paths"].items()}
    for (method, path), statuses in DOCUMENTED_STATUSES.items():
        operation = paths[PARAM.sub("{}", path)][method]
        documented = {int(code) for code in operation["responses"]}
        assert statuses <= documented, (method, path, statuses - documented)
    upload = paths["/api/v1/data/{}/uploads/{}"]["post"]
    assert set(upload["requestBody"]["content"]) == {
        "text/csv",
        "application/x-ndjson",
        "application/vnd.apache.parquet",
    }
    assert "mode" in {p["name"] for p in upload["parameters"] if p["in"] == "query"}
    runs = paths["/api/v1/pipelines/runs"]["get"]
    assert {"status", "limit"} <= {p["name"] for p in runs["parameters"] if p["in"] == "query"}
    rows = paths["/api/v1/data/{}/tables/{}"]["get"]
    assert {"limit", "offset"} <= {p["name"] for p in rows["parameters"] if p["in"] == "query"}
    run = paths["/api/v1/pipelines/run/{}/{}/{}/{}"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in run["parameters"] if p["in"] == "header"}


# -- run -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,pipeline_id,variables",
    [
        (COST_BILLING, "acme-gcp-cost-cost_billing", {"notify_to", "min_rows"}),
        (DRYRUN, "acme-gcp-example-dryrun", {"notify_to"}),
    ],
    ids=["cost_billing", "dryrun"],
)
def test_run_is_accepted_as_pending_with_its_parameters(
    quiet, trigger_client, acme, path, pipeline_id, variables
):
    response = trigger_client.post(path, headers=acme, json={"date": "2024-05-01", "trigger_by": "e2e"})
    body = assert_json(response, 202)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", body["pipeline_logging_id"])
    assert body["pipeline_id"] == pipeline_id
    assert body["status"] == "PENDING"
    assert isinstance(body["message"], str) and body["message"]
    assert body["parameters"]["date"] == "2024-05-01"
    assert body["parameters"]["trigger_by"] == "e2e"
    assert set(body["parameters"]) >= variables
    run = assert_json(
        trigger_client.get(f"/api/v1/pipelines/runs/{body['pipeline_logging_id']}", headers=acme), 200
    )
    assert_run_object(run)
    assert run["status"] == "PENDING"
    assert run["pipeline_id"] == pipeline_id and run["tenant_id"] == "acme"
    assert all(step["status"] == "PENDING" for step in run["steps"])


def test_run_accepts_declared_overridable_variables(quiet, trigger_client, acme):
    response = trigger_client.post(
        COST_BILLING,
        headers=acme,
        json={"date": "2024-05-01", "min_rows": 3, "notify_to": "cfo@acme.example.com"},
    )
    parameters = assert_json(response, 202)["parameters"]
    assert parameters["min_rows"] == 3
    assert parameters["notify_to"] == "cfo@acme.example.com"


def test_run_without_a_body_defaults_to_yesterday(quiet, trigger_client, acme):
    before = dt.datetime.now(dt.UTC).date()
    body = assert_json(trigger_client.post(DRYRUN, headers=acme), 202)
    after = dt.datetime.now(dt.UTC).date()
    yesterdays = {(day - dt.timedelta(days=1)).isoformat() for day in (before, after)}
    assert body["parameters"]["date"] in yesterdays


def test_completed_run_reports_every_field_and_step_on_both_routes(runtime, trigger_client, acme):
    accepted = assert_json(
        trigger_client.post(DRYRUN, headers=acme, json={"date": "2024-05-01", "trigger_by": "e2e-test"}), 202
    )
    run_id = accepted["pipeline_logging_id"]
    wait_for_bus(runtime)
    run = assert_json(trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme), 200)
    by_org = assert_json(trigger_client.get(f"/api/v1/pipelines/status/acme/{run_id}", headers=acme), 200)
    assert run == by_org
    assert_run_object(run)
    assert run["pipeline_logging_id"] == run_id
    assert run["pipeline_id"] == "acme-gcp-example-dryrun"
    assert run["tenant_id"] == "acme"
    assert run["status"] == "COMPLETE", run
    assert run["trigger_type"] == "api" and run["trigger_by"] == "e2e-test"
    assert run["parameters"]["date"] == "2024-05-01"
    assert run["error_message"] is None
    assert run["start_time"] and run["end_time"] and run["end_time"] >= run["start_time"]
    assert isinstance(run["duration_ms"], int) and run["duration_ms"] >= 0
    steps = {step["step_id"]: step for step in run["steps"]}
    assert [s["step_id"] for s in run["steps"]] == ["write_probe", "check_probe", "notify_failure"]
    assert steps["write_probe"]["status"] == "COMPLETE"
    assert steps["write_probe"]["rows_processed"] == 1
    assert steps["write_probe"]["ps_type"] == "gcp.bq_etl" and steps["write_probe"]["name"]
    for step in (steps["write_probe"], steps["check_probe"]):
        assert step["status"] == "COMPLETE"
        assert isinstance(step["duration_ms"], int) and step["duration_ms"] >= 0
        assert step["start_time"] and step["end_time"]
        assert step["error_message"] is None
    assert steps["notify_failure"]["status"] == "SKIPPED"


def test_failed_run_reports_its_error(runtime, trigger_client, acme):
    accepted = assert_json(
        trigger_client.post(COST_BILLING, headers=acme, json={"date": "2024-05-01", "min_rows": 1}), 202
    )
    wait_for_bus(runtime)
    run = assert_json(
        trigger_client.get(f"/api/v1/pipelines/runs/{accepted['pipeline_logging_id']}", headers=acme), 200
    )
    assert_run_object(run)
    assert run["status"] == "FAILED", run
    assert run["error_message"]
    failed = [s for s in run["steps"] if s["status"] == "FAILED"]
    assert failed and all(s["error_message"] for s in failed)
    assert isinstance(run["duration_ms"], int)


@pytest.mark.parametrize(
    "path",
    [
        DRYRUN.replace("dryrun", "nope"),
        COST_BILLING.replace("/gcp/", "/aws/"),
        DRYRUN.replace("example", "nope"),
        COST_BILLING.replace("/cost/", "/example/"),
        "/api/v1/pipelines/run/acme/setup/setup/onboarding",
        "/api/v1/pipelines/run/acme/schemas/tenant/pipeline_runs",
    ],
    ids=["template", "provider", "domain", "wrong-domain", "setup", "schemas"],
)
def test_run_of_an_unknown_template_is_404(shared, path):
    assert_error(shared.trigger.post(path, headers=shared.acme, json={"date": "2024-05-01"}), 404)


@pytest.mark.parametrize("name", ["region", "foo_bar", "Date", "notify"])
def test_run_with_an_undeclared_variable_is_400_naming_it(shared, name):
    body = assert_error(
        shared.trigger.post(COST_BILLING, headers=shared.acme, json={"date": "2024-05-01", name: "x"}), 400
    )
    assert name in body["message"]


@pytest.mark.parametrize(
    "name",
    ["tenant_id", "org_slug", "provider", "domain", "template_name", "pipeline_id", "run_date", "run_id"],
)
def test_run_overriding_a_built_in_is_400_naming_it(shared, name):
    body = assert_error(shared.trigger.post(COST_BILLING, headers=shared.acme, json={name: "globex"}), 400)
    assert name in body["message"]


def test_run_overriding_a_variable_not_declared_overridable_is_400(shared):
    body = assert_error(
        shared.trigger.post(DRYRUN, headers=shared.acme, json={"notify_to": "x@acme.example.com"}), 400
    )
    assert "notify_to" in body["message"]


@pytest.mark.parametrize(
    "date",
    [
        "2024-13-01",
        "2024-02-30",
        "2024/05/01",
        "01-05-2024",
        20240501,
        "1999-12-31",
        "2999-01-01",
        "",
        None,
        "2024-05-01T00:00:00",
        ["2024-05-01"],
    ],
)
def test_run_with_a_bad_date_is_400(shared, date):
    body = assert_error(shared.trigger.post(COST_BILLING, headers=shared.acme, json={"date": date}), 400)
    assert "date" in body["message"]


@pytest.mark.parametrize(
    "name,value",
    [
        ("min_rows", "abc"),
        ("min_rows", 1.5),
        ("min_rows", True),
        ("min_rows", [1]),
        ("notify_to", "not-an-email"),
        ("notify_to", 5),
        ("notify_to", "x" * 2000),
        ("trigger_by", ""),
        ("trigger_by", "x" * 201),
        ("trigger_by", 5),
        ("trigger_by", "a;b"),
    ],
)
def test_run_with_a_badly_typed_variable_is_400_naming_it(shared, name, value):
    response = shared.trigger.post(
        COST_BILLING, headers=shared.acme, json={"date": "2024-05-01", name: value}
    )
    assert name in assert_error(response, 400)["message"]


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"date": ', b"\xff", b"[]", b'[{"date": "2024-05-01"}]', b'"x"', b"7", b"true"]
)
def test_run_with_a_body_that_is_not_a_json_object_is_400(shared, raw):
    response = shared.trigger.post(
        COST_BILLING, headers=shared.acme, data=raw, content_type="application/json"
    )
    assert_error(response, 400)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"date":' * 100_000], ids=["arrays", "objects"])
def test_run_with_deeply_nested_json_is_400_not_500(shared, raw):
    response = shared.trigger.post(
        COST_BILLING, headers=shared.acme, data=raw, content_type="application/json"
    )
    assert_error(response, 400)


def test_identical_run_in_flight_is_409_naming_the_first_run(quiet, trigger_client, acme):
    first = assert_json(trigger_client.post(COST_BILLING, headers=acme, json={"date": "2024-05-01"}), 202)
    again = assert_error(trigger_client.post(COST_BILLING, headers=acme, json={"date": "2024-05-01"}), 409)
    assert again["pipeline_logging_id"] == first["pipeline_logging_id"]
    # who triggers does not make a run different
    other = trigger_client.post(
        COST_BILLING, headers=acme, json={"date": "2024-05-01", "trigger_by": "someone"}
    )
    assert assert_error(other, 409)["pipeline_logging_id"] == first["pipeline_logging_id"]
    # another day, or another variable value, is another run
    assert_json(trigger_client.post(COST_BILLING, headers=acme, json={"date": "2024-05-02"}), 202)
    assert_json(
        trigger_client.post(COST_BILLING, headers=acme, json={"date": "2024-05-01", "min_rows": 2}), 202
    )
    runs = assert_json(trigger_client.get("/api/v1/pipelines/runs?status=PENDING", headers=acme), 200)["runs"]
    assert len(runs) == 3


def test_identical_concurrent_runs_are_accepted_exactly_once(quiet, trigger_client, acme):
    barrier = threading.Barrier(8)
    results: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def trigger() -> None:
        barrier.wait()
        response = trigger_client.post(COST_BILLING, headers=acme, json={"date": "2024-06-01"})
        with lock:
            results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(status for status, _ in results)
    assert statuses == [202] + [409] * 7, results
    accepted = next(body for status, body in results if status == 202)["pipeline_logging_id"]
    assert {body["pipeline_logging_id"] for status, body in results if status == 409} == {accepted}
    assert all(body["error"] and body["message"] for status, body in results if status == 409)
    runs = assert_json(trigger_client.get("/api/v1/pipelines/runs?status=PENDING", headers=acme), 200)["runs"]
    assert [r["pipeline_logging_id"] for r in runs] == [accepted]


def test_idempotency_key_replays_the_original_run(quiet, trigger_client, acme):
    headers = acme | {"Idempotency-Key": "nightly-2024-05-01"}
    first = assert_json(trigger_client.post(COST_BILLING, headers=headers, json={"date": "2024-05-01"}), 202)
    count = len(assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=acme), 200)["runs"])
    again = assert_json(trigger_client.post(COST_BILLING, headers=headers, json={"date": "2024-05-01"}), 202)
    assert again["pipeline_logging_id"] == first["pipeline_logging_id"]
    assert again["replayed"] is True
    assert first.get("replayed") in (False, None)
    assert again["pipeline_id"] == first["pipeline_id"] and again["parameters"] == first["parameters"]
    runs = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=acme), 200)["runs"]
    assert len(runs) == count
    assert [r["pipeline_logging_id"] for r in runs].count(first["pipeline_logging_id"]) == 1


def test_idempotency_key_reused_for_another_body_is_422(quiet, trigger_client, acme):
    headers = acme | {"Idempotency-Key": "k-1"}
    first = assert_json(trigger_client.post(COST_BILLING, headers=headers, json={"date": "2024-05-01"}), 202)
    before = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=acme), 200)["runs"]
    for body in ({"date": "2024-05-02"}, {"date": "2024-05-01", "min_rows": 5}):
        assert_error(trigger_client.post(COST_BILLING, headers=headers, json=body), 422)
    assert assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=acme), 200)["runs"] == before
    assert before[0]["pipeline_logging_id"] == first["pipeline_logging_id"]


@pytest.mark.parametrize("key", ["", "has space", "a" * 129, "k;DROP", "k'y", 'k"y', "k/y", "k\ty"])
def test_invalid_idempotency_key_is_400(shared, key):
    headers = shared.acme | {"Idempotency-Key": key}
    assert_error(shared.trigger.post(COST_BILLING, headers=headers, json={"date": "2024-05-01"}), 400)


# -- runs, status, templates -----------------------------------------------------------------------


def test_runs_are_listed_newest_first_for_this_tenant_only(quiet, trigger_client, two_tenants):
    acme, globex = two_tenants["acme"], two_tenants["globex"]
    created = [
        assert_json(trigger_client.post(path, headers=acme, json={"date": date}), 202)["pipeline_logging_id"]
        for path, date in [
            (DRYRUN, "2024-05-01"),
            (COST_BILLING, "2024-05-01"),
            (DRYRUN, "2024-05-02"),
            (COST_BILLING, "2024-05-03"),
        ]
    ]
    theirs = assert_json(
        trigger_client.post(DRYRUN.replace("acme", "globex"), headers=globex, json={"date": "2024-05-01"}),
        202,
    )["pipeline_logging_id"]

    runs = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=acme), 200)["runs"]
    for run in runs:
        assert_run_object(run)
    assert all(r["tenant_id"] == "acme" for r in runs)
    ids = [r["pipeline_logging_id"] for r in runs]
    assert theirs not in ids
    assert ids[:4] == created[::-1]
    assert len(ids) == len(set(ids)) == 5  # and the onboarding dry run, which completed first
    assert runs[4]["status"] == "COMPLETE"
    starts = [r["start_time"] for r in runs]
    assert starts == sorted(starts, reverse=True)

    pending = assert_json(trigger_client.get("/api/v1/pipelines/runs?status=PENDING", headers=acme), 200)[
        "runs"
    ]
    assert [r["pipeline_logging_id"] for r in pending] == created[::-1]
    complete = assert_json(trigger_client.get("/api/v1/pipelines/runs?status=COMPLETE", headers=acme), 200)[
        "runs"
    ]
    assert [r["pipeline_logging_id"] for r in complete] == ids[4:]
    assert (
        assert_json(trigger_client.get("/api/v1/pipelines/runs?status=FAILED", headers=acme), 200)["runs"]
        == []
    )
    limited = assert_json(trigger_client.get("/api/v1/pipelines/runs?limit=2", headers=acme), 200)["runs"]
    assert [r["pipeline_logging_id"] for r in limited] == created[:1:-1]
    both = assert_json(
        trigger_client.get("/api/v1/pipelines/runs?status=PENDING&limit=1", headers=acme), 200
    )["runs"]
    assert [r["pipeline_logging_id"] for r in both] == created[-1:]
    globex_runs = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=globex), 200)["runs"]
    assert theirs in [r["pipeline_logging_id"] for r in globex_runs]
    assert not set(created) & {r["pipeline_logging_id"] for r in globex_runs}


@pytest.mark.parametrize(
    "query",
    [
        "status=DONE",
        "status=pending",
        "status=COMPLETE%20",
        "status=ALL",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=%201",
        "status=PENDING&limit=x",
    ],
)
def test_runs_listing_with_a_bad_status_or_limit_is_400(shared, query):
    assert_error(shared.trigger.get(f"/api/v1/pipelines/runs?{query}", headers=shared.acme), 400)


@pytest.mark.parametrize("limit", ["1", "1000"])
def test_runs_listing_accepts_limits_at_the_bounds(shared, limit):
    runs = assert_json(shared.trigger.get(f"/api/v1/pipelines/runs?limit={limit}", headers=shared.acme), 200)[
        "runs"
    ]
    assert len(runs) == 1  # the onboarding dry run


@pytest.mark.parametrize("run_id", ["00000000-0000-0000-0000-000000000000", "nope", "x" * 64, "x" * 65])
def test_unknown_run_is_404_on_both_routes(shared, run_id):
    assert_error(shared.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=shared.acme), 404)
    assert_error(shared.trigger.get(f"/api/v1/pipelines/status/acme/{run_id}", headers=shared.acme), 404)


def test_templates_list_runnable_templates_with_their_variables(shared):
    templates = assert_json(shared.trigger.get("/api/v1/pipelines/templates", headers=shared.acme), 200)[
        "templates"
    ]
    by_name = {(t["provider"], t["domain"], t["template"]): t for t in templates}
    assert ("gcp", "cost", "cost_billing") in by_name and ("gcp", "example", "dryrun") in by_name
    for template in templates:
        assert set(template) >= {"provider", "domain", "template", "description", "variables"}
        assert template["description"] and isinstance(template["variables"], dict)
        assert template["provider"] not in ("setup", "schemas")
        assert template["template"] not in ("bootstrap", "onboarding")
    assert set(by_name["gcp", "cost", "cost_billing"]["variables"]) >= {
        "date",
        "trigger_by",
        "notify_to",
        "min_rows",
    }
    assert set(by_name["gcp", "example", "dryrun"]["variables"]) >= {"date", "trigger_by"}
    # the catalogue does not depend on who asks
    other = assert_json(shared.trigger.get("/api/v1/pipelines/templates", headers=shared.globex), 200)[
        "templates"
    ]
    assert other == templates


# -- data uploads ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_upload_loads_rows_into_a_tenant_table(trigger_client, acme, fmt):
    body = assert_json(upload(trigger_client, acme, "costs_upload", ROWS, fmt), 201)
    assert body["table"] == "costs_upload" and body["rows_loaded"] == 3
    assert table_listing(trigger_client, acme)["costs_upload"] == 3
    rows = table_rows(trigger_client, acme, "costs_upload")
    assert sorted((r["service"], float(r["cost"])) for r in rows) == sorted(
        (r["service"], r["cost"]) for r in ROWS
    )
    # a second upload appends by default
    assert assert_json(upload(trigger_client, acme, "costs_upload", ROWS[:1], fmt), 201)["rows_loaded"] == 1
    assert table_listing(trigger_client, acme)["costs_upload"] == 4


@pytest.mark.parametrize("content_type", ["text/csv; charset=utf-8", "TEXT/CSV"])
def test_upload_accepts_content_type_parameters_and_case(trigger_client, acme, content_type):
    response = trigger_client.post(
        "/api/v1/data/acme/uploads/t1", headers=acme, data=csv_bytes(ROWS), content_type=content_type
    )
    assert assert_json(response, 201)["rows_loaded"] == 3


def test_upload_with_mode_replace_replaces_the_table(trigger_client, acme):
    assert_json(upload(trigger_client, acme, "costs_upload", ROWS), 201)
    fresh = [
        {"service": "ai", "cost": 9.75, "day": "2024-06-01"},
        {"service": "db", "cost": 3.0, "day": "2024-06-01"},
    ]
    body = assert_json(upload(trigger_client, acme, "costs_upload", fresh, "ndjson", "?mode=replace"), 201)
    assert body["rows_loaded"] == 2
    assert sorted(r["service"] for r in table_rows(trigger_client, acme, "costs_upload")) == ["ai", "db"]
    assert_json(upload(trigger_client, acme, "costs_upload", fresh, "csv", "?mode=append"), 201)
    assert table_listing(trigger_client, acme)["costs_upload"] == 4


@pytest.mark.parametrize(
    "fmt,bad",
    [
        ("csv", {"service": "x", "cost": "not-a-number", "day": "2024-05-01"}),
        ("ndjson", {"service": "x", "cost": "abc", "day": "2024-05-01"}),
        ("ndjson", {"service": "x", "cost": [1.0, 2.0], "day": "2024-05-01"}),
    ],
)
def test_appending_mismatched_types_is_400_and_keeps_the_previous_rows(trigger_client, acme, fmt, bad):
    assert_json(upload(trigger_client, acme, "costs_upload", ROWS, "parquet"), 201)
    before = table_rows(trigger_client, acme, "costs_upload")
    assert_error(upload(trigger_client, acme, "costs_upload", [bad], fmt), 400)
    assert table_rows(trigger_client, acme, "costs_upload") == before
    assert table_listing(trigger_client, acme)["costs_upload"] == 3


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        "text/csvx",
        None,
    ],
)
def test_upload_of_an_unsupported_content_type_is_415(shared, content_type):
    response = shared.trigger.post(
        "/api/v1/data/acme/uploads/t1", headers=shared.acme, data=csv_bytes(ROWS), content_type=content_type
    )
    assert_error(response, 415)


@pytest.mark.parametrize(
    "fmt,raw",
    [
        ("csv", b"a,b\n1,2,3\n"),
        ("csv", b"a,b\n1\n"),
        ("csv", b'a,b\n"unterminated,2\n'),
        ("ndjson", b'{"a": 1}\n{not json}\n'),
        ("ndjson", b"[1, 2, 3]\n"),
        ("ndjson", b'{"a": 1'),
        ("parquet", b"PAR1 not really parquet PAR1"),
        ("parquet", b"not parquet at all"),
        ("parquet", csv_bytes(ROWS)),
    ],
    ids=[
        "csv-extra-field",
        "csv-missing-field",
        "csv-quote",
        "ndjson-syntax",
        "ndjson-array",
        "ndjson-truncated",
        "parquet-magic",
        "parquet-garbage",
        "parquet-csv",
    ],
)
def test_upload_of_a_malformed_body_is_400(shared, fmt, raw):
    response = shared.trigger.post(
        "/api/v1/data/acme/uploads/t1", headers=shared.acme, data=raw, content_type=FORMATS[fmt][0]
    )
    assert_error(response, 400)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_upload_of_an_empty_body_is_400(shared, fmt):
    response = shared.trigger.post(
        "/api/v1/data/acme/uploads/t1", headers=shared.acme, data=b"", content_type=FORMATS[fmt][0]
    )
    assert_error(response, 400)


@pytest.mark.parametrize("mode", ["overwrite", "REPLACE", "append;drop", "truncate"])
def test_upload_with_an_unknown_mode_is_400(shared, mode):
    assert_error(upload(shared.trigger, shared.acme, "acme_costs", SHARED_ROWS, query=f"?mode={mode}"), 400)


@pytest.mark.parametrize("table", ["pipeline_runs", "step_logs", "dq_results"])
@pytest.mark.parametrize("mode", ["append", "replace"])
def test_upload_into_a_platform_table_is_400(shared, table, mode):
    response = upload(
        shared.trigger, shared.acme, table, [{"pipeline_logging_id": "forged"}], query=f"?mode={mode}"
    )
    assert_error(response, 400)


# -- tables and rows -------------------------------------------------------------------------------


def test_tables_lists_the_tenants_tables_with_row_counts(shared):
    tables = table_listing(shared.trigger, shared.acme)
    assert tables["acme_costs"] == 5
    assert {"pipeline_runs", "step_logs", "dq_results"} <= set(tables)
    assert all(isinstance(n, int) and n >= 0 for n in tables.values())
    assert not any("credential" in name or name.startswith("org_") for name in tables)


def test_rows_page_through_a_table_with_next_offset(shared):
    seen, offset, pages = [], 0, 0
    while offset is not None:
        page = assert_json(
            shared.trigger.get(
                f"/api/v1/data/acme/tables/acme_costs?limit=2&offset={offset}", headers=shared.acme
            ),
            200,
        )
        assert page["table"] == "acme_costs"
        assert len(page["rows"]) <= 2
        seen.extend(page["rows"])
        offset, pages = page["next_offset"], pages + 1
        assert offset is None or offset == pages * 2
    assert pages == 3
    assert sorted((r["sku"], r["amount"]) for r in seen) == sorted(
        (r["sku"], r["amount"]) for r in SHARED_ROWS
    )


@pytest.mark.parametrize(
    "query,count,next_offset",
    [
        ("", 5, None),
        ("?limit=5", 5, None),
        ("?limit=4", 4, 4),
        ("?offset=4", 1, None),
        ("?offset=5", 0, None),
        ("?offset=99&limit=1", 0, None),
        ("?limit=1000", 5, None),
    ],
)
def test_rows_honour_limit_and_offset(shared, query, count, next_offset):
    page = assert_json(
        shared.trigger.get(f"/api/v1/data/acme/tables/acme_costs{query}", headers=shared.acme), 200
    )
    assert len(page["rows"]) == count
    assert page["next_offset"] == next_offset


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=1.5",
        "limit=1e3",
        "offset=-1",
        "offset=x",
        "offset=1.0",
        "offset=1%3B",
        "limit=%202",
    ],
)
def test_rows_with_a_bad_limit_or_offset_are_400(shared, query):
    assert_error(shared.trigger.get(f"/api/v1/data/acme/tables/acme_costs?{query}", headers=shared.acme), 400)


@pytest.mark.parametrize("table", ["nope", "acme_cost", "org_api_keys", "org_integration_credentials"])
def test_rows_of_an_unknown_table_are_404(shared, table):
    assert_error(shared.trigger.get(f"/api/v1/data/acme/tables/{table}", headers=shared.acme), 404)


# -- body size limits ------------------------------------------------------------------------------


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A platform limiting bodies to 4 KiB (uploads) and 1 KiB (JSON), with acme onboarded."""
    monkeypatch.setenv("MAX_REQUEST_BYTES", "4096")
    monkeypatch.setenv("MAX_JSON_BYTES", "1024")
    reset_settings()
    rt = build_runtime(get_settings())
    assert rt.settings.max_request_bytes == 4096
    silence_bus(rt)
    set_runtime(rt)
    onboard, trigger = function_client("onboard", "onboard"), function_client("trigger", "trigger")
    root = {"X-CA-Root-Key": ROOT_KEY}
    assert_json(onboard.post("/api/v1/admin/bootstrap", headers=root, json={}), 200)
    created = onboard.post(
        "/api/v1/organizations/onboard",
        headers=root,
        json={"org_slug": "acme", "company_name": "Acme", "admin_email": "a@acme.example.com"},
    )
    return SimpleNamespace(
        rt=rt,
        onboard=onboard,
        trigger=trigger,
        root=root,
        acme={"X-API-Key": assert_json(created, 201)["api_key"]},
    )


def test_bodies_over_the_limit_are_413(small_limits):
    p = small_limits
    big = b"a,b\n" + b"1,2\n" * 1100  # > 4096 bytes
    response = p.trigger.post(
        "/api/v1/data/acme/uploads/big", headers=p.acme, data=big, content_type="text/csv"
    )
    assert_error(response, 413)
    assert "big" not in table_listing(p.trigger, p.acme)
    small = b"a,b\n" + b"1,2\n" * 900  # < 4096 bytes
    response = p.trigger.post(
        "/api/v1/data/acme/uploads/small", headers=p.acme, data=small, content_type="text/csv"
    )
    assert assert_json(response, 201)["rows_loaded"] == 900

    padded = {"date": "2024-05-01", "trigger_by": "x" * 1100}
    assert_error(p.trigger.post(COST_BILLING, headers=p.acme, json=padded), 413)
    assert (
        assert_json(p.trigger.get("/api/v1/pipelines/runs?status=PENDING", headers=p.acme), 200)["runs"] == []
    )
    onboard = {"org_slug": "initech", "company_name": "I" * 1100, "admin_email": "a@initech.example.com"}
    assert_error(p.onboard.post("/api/v1/organizations/onboard", headers=p.root, json=onboard), 413)
    assert not p.rt.warehouse.dataset_exists("initech")


# -- error semantics of every trigger route --------------------------------------------------------

TENANT_ROUTES = [
    ("post", COST_BILLING),
    ("get", "/api/v1/pipelines/runs/00000000-0000-0000-0000-000000000000"),
    ("get", "/api/v1/pipelines/status/acme/00000000-0000-0000-0000-000000000000"),
    ("get", "/api/v1/pipelines/runs"),
    ("get", "/api/v1/pipelines/templates"),
    ("post", "/api/v1/data/acme/uploads/t1"),
    ("get", "/api/v1/data/acme/tables"),
    ("get", "/api/v1/data/acme/tables/acme_costs"),
]
KEY_KINDS = [
    "missing",
    "empty",
    "malformed",
    "bad-checksum",
    "well-formed-unknown",
    "other-slug-unknown",
    "root-as-api-key",
    "root-header-only",
    "bearer",
]


def bad_key_headers(real: str) -> dict[str, dict[str, str]]:
    """Keys that must all be refused with 401: absent, malformed, bad checksum, unknown, root."""
    flipped = real[:-1] + ("A" if real[-1] != "A" else "B")
    return {
        "missing": {},
        "empty": {"X-API-Key": ""},
        "malformed": {"X-API-Key": "not-a-key"},
        "bad-checksum": {"X-API-Key": flipped},
        "well-formed-unknown": {"X-API-Key": generate_api_key("acme")},
        "other-slug-unknown": {"X-API-Key": generate_api_key("initech")},
        "root-as-api-key": {"X-API-Key": ROOT_KEY},
        "root-header-only": {"X-CA-Root-Key": ROOT_KEY},
        "bearer": {"Authorization": f"Bearer {real}"},
    }


@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize("method,path", TENANT_ROUTES)
def test_tenant_routes_without_a_valid_key_are_401(shared, method, path, kind):
    headers = bad_key_headers(shared.acme["X-API-Key"])[kind]
    if method == "post" and "/uploads/" in path:
        response = shared.trigger.post(path, headers=headers, data=csv_bytes(ROWS), content_type="text/csv")
    else:
        response = getattr(shared.trigger, method)(path, headers=headers, json={"date": "2024-05-01"})
    assert_error(response, 401)


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/"),
        ("get", "/api/v1"),
        ("get", "/api/v1/pipelines"),
        ("post", "/api/v1/pipelines/run/acme/gcp/cost"),
        ("post", "/api/v1/pipelines/run/acme/gcp/cost/cost_billing/extra"),
        ("get", "/api/v1/data/acme"),
        ("post", "/api/v1/admin/bootstrap"),
        ("post", "/api/v1/organizations/onboard"),
        ("get", "/api/v1/integrations/acme"),
        ("get", "/api/v2/pipelines/runs"),
        ("get", "/API/V1/PIPELINES/RUNS"),
    ],
)
def test_unknown_routes_are_404_json(shared, method, path):
    """Onboard-function routes are unknown to the trigger function."""
    assert_error(getattr(shared.trigger, method)(path, headers=shared.acme | shared.root), 404)


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", COST_BILLING),
        ("delete", "/api/v1/pipelines/runs/x"),
        ("post", "/api/v1/pipelines/runs"),
        ("put", "/api/v1/pipelines/templates"),
        ("get", "/api/v1/data/acme/uploads/t1"),
        ("post", "/api/v1/data/acme/tables"),
        ("delete", "/api/v1/data/acme/tables/acme_costs"),
        ("patch", "/api/v1/pipelines/status/acme/x"),
        ("post", "/health"),
        ("put", "/openapi.json"),
    ],
)
def test_wrong_methods_are_405_json_with_allow(shared, method, path):
    response = getattr(shared.trigger, method)(path, headers=shared.acme)
    assert_error(response, 405)
    assert response.headers.get("Allow")


def test_a_run_for_yesterday_records_the_utc_day_it_resolved_to(runtime, trigger_client, two_tenants):
    from common.bus.local import LocalBus

    runtime.bus.close()
    runtime.bus = LocalBus("local-project")  # no subscribers: the run stays as created
    accepted = trigger_client.post(
        "/api/v1/pipelines/run/acme/gcp/cost/cost_billing", headers=two_tenants["acme"], json={"date": "yesterday"}
    )
    assert accepted.status_code == 202, accepted.json
    import datetime as dt

    assert accepted.json["parameters"]["date"] == (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
