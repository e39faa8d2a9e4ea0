"""Tenant isolation and hostile input across both HTTP functions (CONTRACT §2).

One tenant's key never opens another tenant's path (403) and never reveals another tenant's objects (404).
SQL injection and path traversal in every user-supplied path segment, query parameter, JSON field, CSV
header and header value are refused (400/403/404/422) or stored literally; never executed, never a 500.
Most cases share one platform (acme and globex, each with a table, a run and acme with an integration):
each case proves it left every table of that platform exactly as it found it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest

from common.bus.local import LocalBus
from common.metadata.control_dataset import CONTROL_TABLES
from common.wiring import set_runtime
from tests.conftest import ROOT_KEY, function_client
from tests.e2e.support import assert_json, runtime_in

TENANTS = ("acme", "globex")
TENANT_METADATA_TABLES = {"pipeline_runs", "step_logs", "dq_results"}
REFUSED = {400, 403, 404, 422}
SECRET = "sk-AcmeSecretCredential0123456789"  # a DeepSeek key
CSV = b"sku,amount\nsku_1,10\nsku_2,20\n"


# -- helpers ---------------------------------------------------------------------------------------




def assert_refused(response: Any, statuses: set[int] = REFUSED) -> dict[str, Any]:
    """A JSON error object with one of the refusal statuses; never 2xx, never 500."""
    body = assert_json(response, statuses)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def platform_state(runtime: Any) -> dict[str, Any]:
    """Every dataset's tables and row counts."""
    wh = runtime.warehouse
    return {
        dataset: {t: wh.count_rows(dataset, t) for t in wh.list_tables(dataset)}
        for dataset in ("organizations", *TENANTS)
        if wh.dataset_exists(dataset)
    }


def assert_platform_intact(state: dict[str, Any]) -> None:
    """Every control table and both tenants' tables exist, with rows."""
    assert set(state["organizations"]) >= set(CONTROL_TABLES)
    assert state["organizations"]["org_profiles"] >= 2 and state["organizations"]["org_api_keys"] >= 2
    for org in TENANTS:
        assert set(state[org]) >= TENANT_METADATA_TABLES | {f"{org}_costs"}
        assert state[org][f"{org}_costs"] == 2
        assert state[org]["pipeline_runs"] >= 1


def send(
    platform: SimpleNamespace,
    function: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: dict[str, Any] | None = None,
) -> Any:
    """One request: uploads carry CSV, everything else a JSON object."""
    client = platform.onboard if function == "onboard" else platform.trigger
    if "/uploads/" in path:
        return client.post(path, headers=headers, data=CSV, content_type="text/csv")
    if method == "post":
        return client.post(path, headers=headers, json=body if body is not None else {})
    return getattr(client, method)(path, headers=headers)


# -- the shared platform ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _shared_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    rt = runtime_in(tmp_path_factory.mktemp("shared") / "home")
    rt.bus.close()
    rt.bus = LocalBus(
        rt.settings.gcp_project_id
    )  # runs stay PENDING: nothing changes behind the tests' backs
    set_runtime(rt)
    try:
        onboard, trigger = function_client("onboard", "onboard"), function_client("trigger", "trigger")
        root = {"X-CA-Root-Key": ROOT_KEY}
        assert_json(onboard.post("/api/v1/admin/bootstrap", headers=root, json={}), 200)
        keys, runs, dryruns = {}, {}, {}
        for org in TENANTS:
            body = {"org_slug": org, "company_name": org.title(), "admin_email": f"admin@{org}.example.com"}
            created = assert_json(onboard.post("/api/v1/organizations/onboard", headers=root, json=body), 201)
            keys[org] = {"X-API-Key": created["api_key"]}
            dryruns[org] = created["dryrun_pipeline_logging_id"]
            assert_json(
                trigger.post(
                    f"/api/v1/data/{org}/uploads/{org}_costs",
                    headers=keys[org],
                    data=CSV,
                    content_type="text/csv",
                ),
                201,
            )
            run = trigger.post(
                f"/api/v1/pipelines/run/{org}/gcp/cost/cost_billing",
                headers=keys[org],
                json={"date": "2024-05-01"},
            )
            runs[org] = assert_json(run, 202)["pipeline_logging_id"]
        assert_json(
            onboard.post(
                "/api/v1/integrations/acme/deepseek/setup", headers=keys["acme"], json={"credential": SECRET}
            ),
            200,
        )
        platform = SimpleNamespace(
            rt=rt,
            onboard=onboard,
            trigger=trigger,
            root=root,
            keys=keys,
            runs=runs,
            dryruns=dryruns,
            acme=keys["acme"],
            globex=keys["globex"],
        )
        platform.initial = platform_state(rt)
        assert_platform_intact(platform.initial)
    finally:
        set_runtime(None)
    yield platform
    rt.close()


@pytest.fixture
def shared(_shared_platform: SimpleNamespace, clean_environment: None) -> Iterator[SimpleNamespace]:
    """The shared platform installed for this test; afterwards every table must be exactly as before."""
    set_runtime(_shared_platform.rt)
    yield _shared_platform
    try:
        assert platform_state(_shared_platform.rt) == _shared_platform.initial, (
            "a refused request changed data"
        )
    finally:
        set_runtime(None)


# -- cross-tenant access ---------------------------------------------------------------------------

CROSS_TENANT_ROUTES = {
    "integrations-setup": (
        "onboard",
        "post",
        "/api/v1/integrations/{owner}/gcp/setup",
        {"credential": "stolen"},
    ),
    "integrations-list": ("onboard", "get", "/api/v1/integrations/{owner}", None),
    "api-keys-rotate": ("onboard", "post", "/api/v1/organizations/{owner}/api-keys/rotate", None),
    "pipelines-run": (
        "trigger",
        "post",
        "/api/v1/pipelines/run/{owner}/gcp/example/dryrun",
        {"date": "2024-07-01"},
    ),
    "pipelines-status": ("trigger", "get", "/api/v1/pipelines/status/{owner}/{run}", None),
    "data-upload": ("trigger", "post", "/api/v1/data/{owner}/uploads/stolen", None),
    "data-tables": ("trigger", "get", "/api/v1/data/{owner}/tables", None),
    "data-rows": ("trigger", "get", "/api/v1/data/{owner}/tables/{owner}_costs", None),
}


@pytest.mark.parametrize("owner,intruder", [("acme", "globex"), ("globex", "acme")])
@pytest.mark.parametrize("route", list(CROSS_TENANT_ROUTES))
def test_another_tenants_key_on_a_tenant_path_is_403(shared, route, owner, intruder):
    function, method, template, body = CROSS_TENANT_ROUTES[route]
    path = template.format(owner=owner, run=shared.runs[owner])
    response = send(shared, function, method, path, shared.keys[intruder], body)
    refused = assert_refused(response, {403})
    text = response.get_data(as_text=True)
    assert "sku_1" not in text and SECRET not in text and "api_key" not in refused
    # the owner is unaffected: its key still works
    assert_json(shared.trigger.get(f"/api/v1/data/{owner}/tables", headers=shared.keys[owner]), 200)


@pytest.mark.parametrize("which", ["triggered", "onboarding-dryrun"])
def test_another_tenants_run_is_404_whichever_route_asks(shared, which):
    run_id = shared.runs["acme"] if which == "triggered" else shared.dryruns["acme"]
    assert_json(shared.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=shared.acme), 200)
    for path in (f"/api/v1/pipelines/runs/{run_id}", f"/api/v1/pipelines/status/globex/{run_id}"):
        response = shared.trigger.get(path, headers=shared.globex)
        assert_refused(response, {404})
        assert "acme" not in response.get_data(as_text=True)
    # and it is exactly as unknown as a made-up id
    made_up = shared.trigger.get(
        "/api/v1/pipelines/runs/00000000-0000-0000-0000-000000000000", headers=shared.globex
    )
    assert (
        made_up.get_json()["error"]
        == shared.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=shared.globex).get_json()["error"]
    )


@pytest.mark.parametrize("query", ["", "?status=PENDING", "?status=COMPLETE", "?limit=1000"])
def test_a_tenants_run_listing_never_shows_another_tenants_runs(shared, query):
    for org, other in (("globex", "acme"), ("acme", "globex")):
        runs = assert_json(
            shared.trigger.get(f"/api/v1/pipelines/runs{query}", headers=shared.keys[org]), 200
        )["runs"]
        ids = {r["pipeline_logging_id"] for r in runs}
        assert all(r["tenant_id"] == org for r in runs)
        assert all(r["pipeline_id"].startswith(f"{org}-") for r in runs)
        assert not ids & {shared.runs[other], shared.dryruns[other]}
    everything = assert_json(shared.trigger.get("/api/v1/pipelines/runs", headers=shared.globex), 200)["runs"]
    assert {shared.runs["globex"], shared.dryruns["globex"]} <= {r["pipeline_logging_id"] for r in everything}


def test_a_tenants_tables_never_appear_for_the_other(shared):
    for org, other in (("acme", "globex"), ("globex", "acme")):
        listing = shared.trigger.get(f"/api/v1/data/{org}/tables", headers=shared.keys[org])
        names = {t["name"] for t in assert_json(listing, 200)["tables"]}
        assert f"{org}_costs" in names and f"{other}_costs" not in names
        assert_refused(
            shared.trigger.get(f"/api/v1/data/{org}/tables/{other}_costs", headers=shared.keys[org]), {404}
        )
        runs = shared.trigger.get(
            f"/api/v1/data/{org}/tables/pipeline_runs?limit=1000", headers=shared.keys[org]
        )
        rows = assert_json(runs, 200)["rows"]
        assert rows and {r["tenant_id"] for r in rows} == {org}
        assert shared.runs[other] not in runs.get_data(as_text=True)


def test_a_tenants_integrations_never_appear_for_the_other(shared):
    acme = assert_json(shared.onboard.get("/api/v1/integrations/acme", headers=shared.acme), 200)[
        "integrations"
    ]
    assert [i["provider"] for i in acme] == ["deepseek"]
    globex = shared.onboard.get("/api/v1/integrations/globex", headers=shared.globex)
    assert assert_json(globex, 200)["integrations"] == []
    for response in (globex, shared.onboard.get("/api/v1/integrations/acme", headers=shared.acme)):
        assert SECRET not in response.get_data(as_text=True)


def test_the_same_idempotency_key_in_two_tenants_starts_two_runs(runtime, trigger_client, two_tenants):
    runtime.bus.close()
    runtime.bus = LocalBus(runtime.settings.gcp_project_id)
    ids = {}
    for org in TENANTS:
        headers = two_tenants[org] | {"Idempotency-Key": "shared-key-1"}
        response = trigger_client.post(
            f"/api/v1/pipelines/run/{org}/gcp/cost/cost_billing", headers=headers, json={"date": "2024-05-01"}
        )
        body = assert_json(response, 202)
        assert body.get("replayed") in (False, None)
        assert body["pipeline_id"] == f"{org}-gcp-cost-cost_billing"
        ids[org] = body["pipeline_logging_id"]
    assert ids["acme"] != ids["globex"]
    acme_run = assert_json(
        trigger_client.get(f"/api/v1/pipelines/runs/{ids['acme']}", headers=two_tenants["acme"]), 200
    )
    assert acme_run["tenant_id"] == "acme"


# -- SQL injection and path traversal: path segments -----------------------------------------------

ORG_SEGMENTS = [
    "acme'--",
    "acme;DROP",
    "ACME",
    "../acme",
    "acme%2f..",
    "acme%27%20OR%20%271%27%3D%271",
    "acme%3B%20DROP%20SCHEMA%20acme%20CASCADE",
    "acme%20",
    "%2e%2e",
    "organizations",
    "information_schema",
    "main",
]
ORG_ROUTES = {
    "integrations-list": ("onboard", "get", "/api/v1/integrations/{org}", None),
    "integrations-setup": ("onboard", "post", "/api/v1/integrations/{org}/gcp/setup", {"credential": "x"}),
    "api-keys-rotate": ("onboard", "post", "/api/v1/organizations/{org}/api-keys/rotate", None),
    "pipelines-run": (
        "trigger",
        "post",
        "/api/v1/pipelines/run/{org}/gcp/example/dryrun",
        {"date": "2024-07-01"},
    ),
    "pipelines-status": ("trigger", "get", "/api/v1/pipelines/status/{org}/{run}", None),
    "data-upload": ("trigger", "post", "/api/v1/data/{org}/uploads/injected", None),
    "data-tables": ("trigger", "get", "/api/v1/data/{org}/tables", None),
    "data-rows": ("trigger", "get", "/api/v1/data/{org}/tables/acme_costs", None),
}


@pytest.mark.parametrize("route", list(ORG_ROUTES))
@pytest.mark.parametrize("org", ORG_SEGMENTS)
def test_hostile_org_segments_are_refused(shared, org, route):
    function, method, template, body = ORG_ROUTES[route]
    path = template.format(org=org, run=shared.runs["acme"])
    assert_refused(send(shared, function, method, path, shared.acme, body), {400, 403, 404})


@pytest.mark.parametrize("org", ORG_SEGMENTS)
def test_hostile_org_segments_are_refused_even_with_the_root_key(shared, org):
    response = shared.onboard.post(f"/api/v1/organizations/{org}/api-keys/rotate", headers=shared.root)
    assert_refused(response, {400, 404})


TEMPLATE_SEGMENTS = [
    ("..", "cost", "cost_billing"),
    ("gcp", "..", "dryrun"),
    ("gcp", "cost", ".."),
    ("..%2f..%2fsetup", "x", "onboarding"),
    ("setup", "x", "onboarding"),
    ("setup", "..", "onboarding"),
    ("setup", "setup", "onboarding"),
    ("setup", "bootstrap", "bootstrap"),
    ("gcp", "cost", "cost_billing;--"),
    ("gcp", "cost", "cost_billing%00"),
    ("gcp", "cost", "COST_BILLING"),
    ("gcp", "cost", "cost_billing.yml"),
    ("gcp", "cost", "cost_billing%27%20OR%201=1"),
    ("gcp%3B--", "cost", "cost_billing"),
    ("schemas", "tenant", "pipeline_runs"),
    (".", "cost", "cost_billing"),
    ("gcp", "cost", "%2e%2e"),
    ("gcp", "..%2fexample", "dryrun"),
    ("%2e%2e%2fgcp", "cost", "cost_billing"),
]


@pytest.mark.parametrize("provider,domain,template", TEMPLATE_SEGMENTS)
def test_hostile_template_segments_are_refused(shared, provider, domain, template):
    response = shared.trigger.post(
        f"/api/v1/pipelines/run/acme/{provider}/{domain}/{template}",
        headers=shared.acme,
        json={"date": "2024-07-01"},
    )
    assert_refused(response, {400, 404})


@pytest.mark.parametrize(
    "provider", ["..", "gcp;--", "GCP", "gcp%2f..%2f..", "gcp%27--", "%2e%2e", "setup", "gcp%20OR%201=1"]
)
def test_hostile_integration_providers_are_refused(shared, provider):
    response = shared.onboard.post(
        f"/api/v1/integrations/acme/{provider}/setup", headers=shared.acme, json={"credential": "x"}
    )
    assert_refused(response, {400, 404})


TABLE_SEGMENTS = [
    "t%3B%20DROP%20TABLE%20x",
    "../../etc",
    "x%60y",
    "T1",
    "acme_costs%22",
    "x%27%3B--",
    "acme_costs%00",
    "organizations.org_api_keys",
    "%2e%2e",
    "a" * 65,
    "acme_costs%20--",
    "_x",
    "1x",
    "org_api_keys%60%3B%20DROP%20TABLE%20organizations.org_profiles",
]


@pytest.mark.parametrize("table", TABLE_SEGMENTS)
def test_hostile_table_names_are_refused_for_reading(shared, table):
    assert_refused(shared.trigger.get(f"/api/v1/data/acme/tables/{table}", headers=shared.acme), {400, 404})


@pytest.mark.parametrize("table", [*TABLE_SEGMENTS, "pipeline_runs", "step_logs", "dq_results"])
def test_hostile_table_names_are_refused_for_uploads(shared, table):
    response = shared.trigger.post(
        f"/api/v1/data/acme/uploads/{table}", headers=shared.acme, data=CSV, content_type="text/csv"
    )
    assert_refused(response, {400, 404})


RUN_IDS = [
    "'%20OR%20'1'='1",
    "../x",
    "x'%20UNION%20SELECT%20*%20FROM%20organizations.org_api_keys%20--",
    "%00",
    "a" * 65,
    "%2e%2e",
    "*",
    "%25",
    "%27",
    "x%3B%20DROP%20TABLE%20pipeline_runs",
]


@pytest.mark.parametrize("run_id", RUN_IDS)
def test_hostile_run_ids_are_unknown(shared, run_id):
    for path in (f"/api/v1/pipelines/runs/{run_id}", f"/api/v1/pipelines/status/acme/{run_id}"):
        assert_refused(shared.trigger.get(path, headers=shared.acme), {400, 404})


# -- SQL injection: query parameters, JSON fields, headers -----------------------------------------

QUERY_CASES = [
    ("/api/v1/pipelines/runs", {"status": "COMPLETE' OR 1=1 --"}),
    ("/api/v1/pipelines/runs", {"status": "PENDING; DROP TABLE pipeline_runs"}),
    ("/api/v1/pipelines/runs", {"limit": "1;DROP"}),
    ("/api/v1/pipelines/runs", {"limit": "1 OR 1=1"}),
    ("/api/v1/pipelines/runs", {"limit": "-1"}),
    ("/api/v1/data/acme/tables/acme_costs", {"limit": "1;DROP"}),
    ("/api/v1/data/acme/tables/acme_costs", {"offset": "-1"}),
    ("/api/v1/data/acme/tables/acme_costs", {"offset": "0 OR 1=1"}),
    (
        "/api/v1/data/acme/tables/acme_costs",
        {"limit": "10) UNION SELECT * FROM organizations.org_api_keys --"},
    ),
    ("/api/v1/data/acme/tables/acme_costs", {"limit": "99999999999999999999"}),
]


@pytest.mark.parametrize("path,query", QUERY_CASES)
def test_hostile_query_parameters_are_400(shared, path, query):
    assert_refused(shared.trigger.get(f"{path}?{urlencode(query)}", headers=shared.acme), {400})


@pytest.mark.parametrize("mode", ["replace;DROP", "replace' --", "append OR 1=1"])
def test_hostile_upload_mode_is_400(shared, mode):
    response = shared.trigger.post(
        f"/api/v1/data/acme/uploads/acme_costs?{urlencode({'mode': mode})}",
        headers=shared.acme,
        data=CSV,
        content_type="text/csv",
    )
    assert_refused(response, {400})


RUN_BODIES = [
    {"date": "2024-05-01' OR '1'='1"},
    {"date": "2024-05-01; DROP TABLE pipeline_runs"},
    {"date": "2024-05-01'--"},
    {"date": "@date"},
    {"date": "{tenant_id}"},
    {"trigger_by": "x'; DROP TABLE pipeline_runs; --"},
    {"trigger_by": 'x"; --'},
    {"trigger_by": "x`y"},
    {"trigger_by": "{tenant_id}"},
    {"notify_to": "a@b.com'; DROP TABLE org_profiles; --"},
    {"min_rows": "1; DROP TABLE x"},
    {"min_rows": "1 OR 1=1"},
    {"tenant_id": "globex"},
    {"org_slug": "globex'--"},
    {"run_id": "' OR '1'='1"},
    {"date": "2024-05-01", "x'; DROP TABLE x; --": 1},
]


@pytest.mark.parametrize("body", RUN_BODIES)
def test_hostile_run_body_fields_are_400(shared, body):
    assert_refused(
        shared.trigger.post(
            "/api/v1/pipelines/run/acme/gcp/cost/cost_billing", headers=shared.acme, json=body
        ),
        {400},
    )


HOSTILE_SLUGS = [
    "acme'--",
    "acme;DROP",
    "ACME",
    "../acme",
    "acme/..",
    "x'; DROP SCHEMA organizations CASCADE; --",
    'acme" OR "1"="1',
    "acme`",
    "acme\x00",
    "",
]


@pytest.mark.parametrize("slug", HOSTILE_SLUGS)
@pytest.mark.parametrize(
    "route", ["/api/v1/organizations/onboard", "/api/v1/organizations/dryrun", "/api/v1/customers/onboard"]
)
def test_hostile_org_slugs_in_bodies_are_422(shared, route, slug):
    if route == "/api/v1/customers/onboard":
        body: dict[str, Any] = {"tenant_id": slug}
    else:
        body = {"org_slug": slug, "company_name": "X", "admin_email": "a@x.example.com"}
    assert_refused(shared.onboard.post(route, headers=shared.root, json=body), {422})


@pytest.mark.parametrize(
    "email", ["a@b.com'; DROP TABLE org_profiles; --", 'a@b.com" OR 1=1', "a@b.com;x@c.com", "<script>@x.com"]
)
def test_hostile_admin_emails_are_422(shared, email):
    body = {"org_slug": "initech", "company_name": "Initech", "admin_email": email}
    assert_refused(
        shared.onboard.post("/api/v1/organizations/onboard", headers=shared.root, json=body), {422}
    )
    assert not shared.rt.warehouse.dataset_exists("initech")


@pytest.mark.parametrize(
    "key", ["' OR 1=1 --", "k; DROP TABLE pipeline_runs", "../x", 'k"y', "k`y", "a" * 129]
)
def test_hostile_idempotency_keys_are_400(shared, key):
    response = shared.trigger.post(
        "/api/v1/pipelines/run/acme/gcp/cost/cost_billing",
        headers=shared.acme | {"Idempotency-Key": key},
        json={"date": "2024-07-01"},
    )
    assert_refused(response, {400})


COMPANY = "O'Brien \"; DROP TABLE org_profiles; --"


def test_a_dryrun_with_a_hostile_company_name_is_just_a_dryrun(shared):
    body = {"org_slug": "obrien", "company_name": COMPANY, "admin_email": "ops@obrien.example.com"}
    result = assert_json(
        shared.onboard.post("/api/v1/organizations/dryrun", headers=shared.root, json=body), 200
    )
    assert result["ready"] is True
    assert not shared.rt.warehouse.dataset_exists("obrien")


def test_hostile_text_values_are_stored_literally(
    runtime, onboard_client, trigger_client, two_tenants, root_headers
):
    body = {"org_slug": "obrien", "company_name": COMPANY, "admin_email": "ops@obrien.example.com"}
    created = assert_json(
        onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201
    )
    profile = runtime.warehouse.query(
        "SELECT company_name FROM organizations.org_profiles WHERE org_slug = @org", {"org": "obrien"}
    )
    assert profile == [{"company_name": COMPANY}]
    # a local path may hold quotes, semicolons and backticks: stored as given, never executed
    settings = {
        "cur_location": "/data/cur'; DROP TABLE org_integration_credentials; --/`x`; --",
        "cur_version": "auto",
    }
    credential = {"aws_access_key_id": "AKIAOBRIEN0123456789", "aws_secret_access_key": "o" * 40}
    assert_json(
        onboard_client.post(
            "/api/v1/integrations/obrien/aws/setup",
            headers={"X-API-Key": created["api_key"]},
            json={"credential": credential, "settings": settings},
        ),
        200,
    )
    stored = runtime.warehouse.query(
        "SELECT settings FROM organizations.org_integration_credentials WHERE org_slug = @org",
        {"org": "obrien"},
    )
    assert [json.loads(r["settings"]) for r in stored] == [settings]
    state = platform_state(runtime)
    assert set(state["organizations"]) >= set(CONTROL_TABLES)
    assert state["organizations"]["org_profiles"] == 3
    for org in TENANTS:
        assert set(state[org]) >= TENANT_METADATA_TABLES
        assert_json(trigger_client.get(f"/api/v1/data/{org}/tables", headers=two_tenants[org]), 200)


@pytest.mark.parametrize(
    "content_type,raw,expected",
    [
        ("text/csv", b"a\"b,c`d,e;DROP TABLE x,f'g\n1,2,3,4\n", {"a_b", "c_d", "e_DROP_TABLE_x", "f_g"}),
        ("text/csv", b'"x""); DROP TABLE org_profiles; --",`y`\n1,2\n', {"_y_"}),
        (
            "application/x-ndjson",
            b'{"a\\"b": 1, "c`d;": 2, "DROP TABLE pipeline_runs; --": 3}\n',
            {"a_b", "c_d_"},
        ),
        ("text/csv", b"1st,ok\n1,2\n", {"_1st", "ok"}),
    ],
    ids=["csv-quotes-backticks-semicolons", "csv-sql-header", "ndjson-keys", "csv-digit-first"],
)
def test_hostile_column_headers_are_cleaned_never_executed(
    runtime, trigger_client, two_tenants, content_type, raw, expected
):
    acme = two_tenants["acme"]
    before = platform_state(runtime)
    response = trigger_client.post(
        "/api/v1/data/acme/uploads/hostile", headers=acme, data=raw, content_type=content_type
    )
    body = assert_json(response, 201)
    assert body["rows_loaded"] == 1
    rows = assert_json(trigger_client.get("/api/v1/data/acme/tables/hostile", headers=acme), 200)["rows"]
    assert len(rows) == 1
    columns = set(rows[0])
    assert expected <= columns
    assert all(name.replace("_", "").isalnum() for name in columns), columns
    after = platform_state(runtime)
    assert after["acme"].pop("hostile") == 1
    assert after == before


@pytest.mark.parametrize("raw", [b"a;b,a`b\n1,2\n", b"x y,x-y\n1,2\n"])
def test_column_headers_that_collide_after_cleaning_are_400(shared, raw):
    response = shared.trigger.post(
        "/api/v1/data/acme/uploads/hostile", headers=shared.acme, data=raw, content_type="text/csv"
    )
    assert_refused(response, {400})


# -- after all that --------------------------------------------------------------------------------


def test_every_attack_at_once_leaves_every_table_and_row_intact(shared):
    """Replay the hostile inputs back to back; every control table and both tenants' tables are unchanged."""
    statuses = []
    for org in ORG_SEGMENTS:
        for route, (function, method, template, body) in ORG_ROUTES.items():
            path = template.format(org=org, run=shared.runs["acme"])
            statuses.append((route, org, send(shared, function, method, path, shared.acme, body).status_code))
    for provider, domain, template in TEMPLATE_SEGMENTS:
        response = shared.trigger.post(
            f"/api/v1/pipelines/run/acme/{provider}/{domain}/{template}",
            headers=shared.acme,
            json={"date": "2024-07-01"},
        )
        statuses.append(("template", provider, response.status_code))
    for table in TABLE_SEGMENTS:
        statuses.append(
            (
                "read",
                table,
                shared.trigger.get(f"/api/v1/data/acme/tables/{table}", headers=shared.acme).status_code,
            )
        )
        statuses.append(
            (
                "upload",
                table,
                shared.trigger.post(
                    f"/api/v1/data/acme/uploads/{table}",
                    headers=shared.acme,
                    data=CSV,
                    content_type="text/csv",
                ).status_code,
            )
        )
    for run_id in RUN_IDS:
        statuses.append(
            (
                "run",
                run_id,
                shared.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=shared.acme).status_code,
            )
        )
    for path, query in QUERY_CASES:
        statuses.append(
            ("query", path, shared.trigger.get(f"{path}?{urlencode(query)}", headers=shared.acme).status_code)
        )
    for body in RUN_BODIES:
        statuses.append(
            (
                "body",
                str(body),
                shared.trigger.post(
                    "/api/v1/pipelines/run/acme/gcp/cost/cost_billing", headers=shared.acme, json=body
                ).status_code,
            )
        )
    unexpected = [s for s in statuses if s[2] not in REFUSED]
    assert not unexpected, unexpected

    state = platform_state(shared.rt)
    assert state == shared.initial
    assert_platform_intact(state)
    # and both tenants still work
    for org in TENANTS:
        rows = assert_json(
            shared.trigger.get(f"/api/v1/data/{org}/tables/{org}_costs", headers=shared.keys[org]), 200
        )
        assert sorted(r["sku"] for r in rows["rows"]) == ["sku_1", "sku_2"]
    assert_json(shared.onboard.get("/api/v1/integrations/acme", headers=shared.acme), 200)
