"""The onboard function over HTTP (CONTRACT §2): health, OpenAPI, bootstrap, onboarding, keys, integrations.

Every request goes through functions-framework's test client of functions/onboard/main.py; the trigger
function's client is used only to prove that keys issued or revoked here behave the same over there.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.crypto.api_keys import generate_api_key
from common.crypto.keyring import DecryptionFailed
from common.metadata.control_dataset import CONTROL_TABLES
from common.metadata.schemas import load_schema
from common.wiring import build_runtime, set_runtime
from convergence.demo.provider_apis import ProviderApiServer
from tests.conftest import ROOT_KEY, function_client
from tests.e2e.support import assert_error, assert_json, runtime_in

# CONTRACT §2: the routes the onboard function serves, with their methods.
ONBOARD_ROUTES = {
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("post", "/api/v1/admin/bootstrap"),
    ("post", "/api/v1/admin/runs/bulk"),
    ("get", "/api/v1/admin/runs/bulk/{bulk_id}"),
    ("post", "/api/v1/organizations/dryrun"),
    ("post", "/api/v1/organizations/onboard"),
    ("post", "/api/v1/customers/onboard"),
    ("post", "/api/v1/organizations/{org}/api-keys/rotate"),
    ("get", "/api/v1/organizations/{org}/notifications"),
    ("put", "/api/v1/organizations/{org}/notifications"),
    ("post", "/api/v1/integrations/{org}/{provider}/setup"),
    ("get", "/api/v1/integrations/{org}"),
    ("post", "/api/v1/integrations/{org}/{provider}/validate"),
    ("get", "/api/v1/integrations/{org}/{provider}"),
    ("delete", "/api/v1/integrations/{org}/{provider}"),
}
PUBLIC_ROUTES = {"/health", "/openapi.json", "/docs"}
ROOT_ROUTES = {
    "/api/v1/admin/bootstrap",
    "/api/v1/admin/runs/bulk",
    "/api/v1/admin/runs/bulk/{bulk_id}",
    "/api/v1/organizations/dryrun",
    "/api/v1/organizations/onboard",
    "/api/v1/customers/onboard",
}
TENANT_TABLES = {"pipeline_runs", "step_logs", "dq_results"}
CHECK_STATUSES = {"passed", "failed", "warning"}
RESERVED_SLUGS = ["organizations", "information_schema", "pg_catalog", "main", "system", "temp"]
PARAM = re.compile(r"\{[a-z_]+\}")
SECRET = "sk-admin-S3cr3t-Value-That-Must-Never-Leak-0123456789"  # an OpenAI admin key


def key_pattern(org: str) -> re.Pattern[str]:
    return re.compile(rf"^{org}_api_[A-Za-z0-9]{{32,}}$")






def onboard_body(org: str, **extra: Any) -> dict[str, Any]:
    return {
        "org_slug": org,
        "company_name": f"{org.title()} Inc",
        "admin_email": f"admin@{org.replace('_', '')}.example.com",
    } | extra


def bootstrap(client: Any, headers: dict[str, str]) -> dict[str, Any]:
    return assert_json(client.post("/api/v1/admin/bootstrap", headers=headers, json={}), 200)


def control_counts(runtime: Any) -> dict[str, int]:
    dataset = runtime.settings.control_dataset
    return {t: runtime.warehouse.count_rows(dataset, t) for t in runtime.warehouse.list_tables(dataset)}


def platform_state(runtime: Any) -> dict[str, Any]:
    """Every dataset's tables and row counts: what a refused request must leave untouched."""
    wh = runtime.warehouse
    return {
        dataset: {t: wh.count_rows(dataset, t) for t in wh.list_tables(dataset)}
        for dataset in ("organizations", "acme", "globex", "initech")
        if wh.dataset_exists(dataset)
    }


@pytest.fixture(scope="module")
def _shared_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """One bootstrapped platform with acme and globex, for the many cases that must change nothing.

    Onboarding costs most of a second, so refusal cases (bad keys, bodies, methods) share this platform
    and each proves it left the platform's state exactly as it found it.
    """
    rt = runtime_in(tmp_path_factory.mktemp("shared") / "home")
    set_runtime(rt)
    try:
        onboard, trigger = function_client("onboard", "onboard"), function_client("trigger", "trigger")
        root = {"X-CA-Root-Key": ROOT_KEY}
        bootstrap(onboard, root)
        keys = {}
        for org in ("acme", "globex"):
            created = onboard.post("/api/v1/organizations/onboard", headers=root, json=onboard_body(org))
            keys[org] = {"X-API-Key": assert_json(created, 201)["api_key"]}
    finally:
        set_runtime(None)
    yield SimpleNamespace(rt=rt, onboard=onboard, trigger=trigger, root=root, **keys)
    rt.close()


@pytest.fixture
def shared(_shared_platform: SimpleNamespace, clean_environment: None) -> Iterator[SimpleNamespace]:
    """The shared platform installed for this test; afterwards its state must be exactly as before."""
    set_runtime(_shared_platform.rt)
    before = platform_state(_shared_platform.rt)
    yield _shared_platform
    try:
        assert platform_state(_shared_platform.rt) == before, "a refused request changed the platform"
    finally:
        set_runtime(None)


# -- health and OpenAPI ----------------------------------------------------------------------------


def test_health_answers_ok_without_a_key(onboard_client):
    body = assert_json(onboard_client.get("/health"), 200)
    assert body["status"] == "ok"


def test_openapi_document_lists_exactly_the_onboard_routes_of_the_contract(onboard_client):
    doc = assert_json(onboard_client.get("/openapi.json"), 200)
    assert str(doc["openapi"]).startswith("3.")
    assert doc["info"]["title"]
    documented = {
        (method, PARAM.sub("{}", path)) for path, operations in doc["paths"].items() for method in operations
    }
    assert documented == {(method, PARAM.sub("{}", path)) for method, path in ONBOARD_ROUTES}


DOCUMENTED_STATUSES = {  # statuses these tests see each route answer with
    ("post", "/api/v1/admin/bootstrap"): {200, 400, 401, 422},
    ("post", "/api/v1/organizations/dryrun"): {200, 400, 401, 422},
    ("post", "/api/v1/organizations/onboard"): {201, 400, 401, 409, 413, 422},
    ("post", "/api/v1/customers/onboard"): {201, 400, 401, 409, 422},
    ("post", "/api/v1/organizations/{org}/api-keys/rotate"): {200, 401, 403, 404},
    ("post", "/api/v1/integrations/{org}/{provider}/setup"): {200, 400, 401, 403, 422},
    ("get", "/api/v1/integrations/{org}"): {200, 401, 403},
    ("post", "/api/v1/integrations/{org}/{provider}/validate"): {200, 400, 401, 403, 404},
    ("get", "/api/v1/integrations/{org}/{provider}"): {200, 400, 401, 403, 404},
    ("delete", "/api/v1/integrations/{org}/{provider}"): {200, 400, 401, 403, 404},
}


def test_openapi_document_lists_every_status_and_body_field_the_routes_use(onboard_client):
    doc = assert_json(onboard_client.get("/openapi.json"), 200)
    for (method, path), statuses in DOCUMENTED_STATUSES.items():
        documented = {int(code) for code in doc["paths"][path][method]["responses"]}
        assert statuses <= documented, (method, path, statuses - documented)
    schemas = doc["components"]["schemas"]
    onboard = doc["paths"]["/api/v1/organizations/onboard"]["post"]["requestBody"]["content"][
        "application/json"
    ]
    schema = schemas[onboard["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert set(schema["properties"]) >= {
        "org_slug",
        "company_name",
        "admin_email",
        "subscription_plan",
        "force_recreate_dataset",
        "force_recreate_tables",
    }
    assert set(schema["required"]) >= {"org_slug", "company_name", "admin_email"}
    assert schema["properties"]["org_slug"]["pattern"] == "^[a-z][a-z0-9_]{2,49}$"
    setup = doc["paths"]["/api/v1/integrations/{org}/{provider}/setup"]["post"]["requestBody"]["content"]
    assert (
        "credential" in schemas[setup["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"]
    )


def test_openapi_document_states_who_may_call_each_operation(onboard_client):
    doc = assert_json(onboard_client.get("/openapi.json"), 200)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["rootKey"] == {"type": "apiKey", "in": "header", "name": "X-CA-Root-Key"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            security = {name for requirement in operation.get("security", []) for name in requirement}
            if path in PUBLIC_ROUTES:
                assert security == set(), path
            elif path in ROOT_ROUTES:
                assert security == {"rootKey"}, path
            elif path.endswith(("/api-keys/rotate", "/notifications")):
                assert security == {"rootKey", "apiKey"}, path
            else:
                assert security == {"apiKey"}, path
            assert operation["responses"], (method, path)


def test_every_documented_operation_is_really_served_and_guarded(onboard_client):
    """Calling each documented operation without a key reaches it: 401 for guarded ones, never 404/405."""
    doc = assert_json(onboard_client.get("/openapi.json"), 200)
    for path, operations in doc["paths"].items():
        concrete = path.replace("{org}", "acme").replace("{provider}", "gcp")
        for method in operations:
            response = getattr(onboard_client, method)(concrete)
            if path == "/docs":
                assert (response.status_code, response.mimetype) == (200, "text/html")
            elif path in PUBLIC_ROUTES:
                assert_json(response, 200)
            else:
                assert_error(response, 401)
            assert str(response.status_code) in operations[method]["responses"], (method, path)


# -- bootstrap -------------------------------------------------------------------------------------


def test_bootstrap_creates_the_control_tables_then_repeats_harmlessly(runtime, onboard_client, root_headers):
    first = bootstrap(onboard_client, root_headers)
    assert first["status"] and first["dataset"] == "organizations"
    assert set(first["tables_created"]) == set(CONTROL_TABLES)
    second = bootstrap(onboard_client, root_headers)
    assert second["tables_created"] == []
    assert second["dataset"] == "organizations"
    assert set(runtime.warehouse.list_tables("organizations")) >= set(CONTROL_TABLES)


def test_repeated_bootstrap_keeps_onboarded_organisations(
    runtime, onboard_client, trigger_client, onboard_org, root_headers
):
    key = onboard_org("acme")
    before = control_counts(runtime)
    assert bootstrap(onboard_client, root_headers)["tables_created"] == []
    assert control_counts(runtime) == before
    assert_json(trigger_client.get("/api/v1/pipelines/templates", headers={"X-API-Key": key}), 200)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CA-Root-Key": ""},
        {"X-CA-Root-Key": "wrong-root-key"},
        {"X-CA-Root-Key": ROOT_KEY + "x"},
        {"X-API-Key": ROOT_KEY},
    ],
    ids=["missing", "empty", "wrong", "longer", "root-as-api-key"],
)
def test_bootstrap_without_the_root_key_is_401_and_creates_nothing(runtime, onboard_client, headers):
    assert_error(onboard_client.post("/api/v1/admin/bootstrap", headers=headers, json={}), 401)
    assert not runtime.warehouse.dataset_exists("organizations")


def test_bootstrap_refuses_unknown_fields_with_422(runtime, onboard_client, root_headers):
    response = onboard_client.post(
        "/api/v1/admin/bootstrap", headers=root_headers, json={"drop_everything": True}
    )
    assert_error(response, 422)
    assert not runtime.warehouse.dataset_exists("organizations")


# -- dryrun ----------------------------------------------------------------------------------------


def dryrun(client: Any, headers: dict[str, str], org: str) -> dict[str, Any]:
    body = assert_json(
        client.post("/api/v1/organizations/dryrun", headers=headers, json=onboard_body(org)), 200
    )
    assert body["org_slug"] == org
    assert isinstance(body["ready"], bool)
    assert body["checks"], body
    for check in body["checks"]:
        assert set(check) >= {"name", "status", "message"}
        assert check["status"] in CHECK_STATUSES, check
    return body


def check_named(body: dict[str, Any], name: str) -> dict[str, Any]:
    matches = [c for c in body["checks"] if c["name"] == name]
    assert len(matches) == 1, body["checks"]
    return matches[0]


def test_dryrun_of_a_free_slug_is_ready_and_changes_nothing(
    runtime, onboard_client, root_headers, onboard_org
):
    onboard_org("acme")
    tables_before = {d: runtime.warehouse.list_tables(d) for d in ("organizations", "acme")}
    counts_before = control_counts(runtime)
    body = dryrun(onboard_client, root_headers, "initech")
    assert body["ready"] is True
    assert all(c["status"] != "failed" for c in body["checks"])
    assert not runtime.warehouse.dataset_exists("initech")
    assert {d: runtime.warehouse.list_tables(d) for d in ("organizations", "acme")} == tables_before
    assert control_counts(runtime) == counts_before
    # and onboarding really works afterwards, as the dry run promised
    created = onboard_client.post(
        "/api/v1/organizations/onboard", headers=root_headers, json=onboard_body("initech")
    )
    assert_json(created, 201)


def test_dryrun_of_an_onboarded_org_is_not_ready(shared):
    body = dryrun(shared.onboard, shared.root, "acme")
    assert body["ready"] is False
    assert check_named(body, "org_available")["status"] == "failed"


def test_dryrun_before_bootstrap_is_not_ready_and_bootstraps_nothing(runtime, onboard_client, root_headers):
    body = dryrun(onboard_client, root_headers, "acme")
    assert body["ready"] is False
    assert any(c["status"] == "failed" for c in body["checks"])
    assert not runtime.warehouse.dataset_exists("organizations")
    assert not runtime.warehouse.dataset_exists("acme")


@pytest.mark.parametrize("slug", ["organizations", "information_schema"])
def test_dryrun_of_a_reserved_slug_is_not_ready(shared, slug):
    body = dryrun(shared.onboard, shared.root, slug)
    assert body["ready"] is False


@pytest.mark.parametrize(
    "change",
    [
        {"org_slug": "Acme"},
        {"org_slug": "ab"},
        {"org_slug": "1acme"},
        {"org_slug": "acme-co"},
        {"admin_email": "not-an-email"},
        {"company_name": ""},
        {"subscription_plan": "platinum"},
        {"unexpected": 1},
    ],
    ids=["upper", "short", "digit-first", "dash", "email", "empty-company", "plan", "extra-field"],
)
def test_dryrun_with_an_invalid_body_is_422(shared, change):
    body = onboard_body("initech") | change
    assert_error(shared.onboard.post("/api/v1/organizations/dryrun", headers=shared.root, json=body), 422)


def test_dryrun_requires_the_root_key(shared):
    for headers in ({}, shared.acme, {"X-CA-Root-Key": "nope"}):
        response = shared.onboard.post(
            "/api/v1/organizations/dryrun", headers=headers, json=onboard_body("initech")
        )
        assert_error(response, 401)


# -- onboard ---------------------------------------------------------------------------------------


def test_onboard_returns_201_with_a_key_dataset_tables_and_a_complete_dry_run(
    runtime, onboard_client, trigger_client, root_headers
):
    bootstrap(onboard_client, root_headers)
    response = onboard_client.post(
        "/api/v1/organizations/onboard", headers=root_headers, json=onboard_body("acme")
    )
    body = assert_json(response, 201)
    assert body["org_slug"] == "acme"
    assert key_pattern("acme").fullmatch(body["api_key"]), body["api_key"]
    assert body["dataset_created"] is True
    assert set(body["tables_created"]) >= TENANT_TABLES
    assert body["dryrun_status"] == "COMPLETE"
    assert isinstance(body["message"], str) and body["message"]
    assert runtime.warehouse.dataset_exists("acme")
    assert set(runtime.warehouse.list_tables("acme")) >= TENANT_TABLES
    # the key is shown once and works on the other function
    assert_json(trigger_client.get("/api/v1/data/acme/tables", headers={"X-API-Key": body["api_key"]}), 200)
    # the key itself is not stored in plaintext
    stored = runtime.warehouse.query(
        "SELECT * FROM organizations.org_api_keys WHERE org_slug = @org", {"org": "acme"}
    )
    assert stored and all(body["api_key"] not in json.dumps(row, default=str) for row in stored)


def test_two_onboarded_orgs_get_different_keys(shared):
    acme, globex = shared.acme["X-API-Key"], shared.globex["X-API-Key"]
    assert acme != globex
    assert key_pattern("acme").fullmatch(acme) and key_pattern("globex").fullmatch(globex)


@pytest.mark.parametrize("options", [{}, {"force_recreate_dataset": True}, {"force_recreate_tables": True}])
def test_second_onboard_of_same_org_is_409(shared, options):
    response = shared.onboard.post(
        "/api/v1/organizations/onboard", headers=shared.root, json=onboard_body("acme", **options)
    )
    assert_error(response, 409)
    assert "api_key" not in response.get_json()
    # the first key still works: a refused onboarding does not rotate it
    assert_json(shared.onboard.get("/api/v1/integrations/acme", headers=shared.acme), 200)


def test_onboard_before_bootstrap_is_409_not_bootstrapped(runtime, onboard_client, root_headers):
    response = onboard_client.post(
        "/api/v1/organizations/onboard", headers=root_headers, json=onboard_body("acme")
    )
    assert_error(response, 409, "not_bootstrapped")
    assert not runtime.warehouse.dataset_exists("acme")


@pytest.mark.parametrize("route", ["/api/v1/organizations/onboard", "/api/v1/customers/onboard"])
@pytest.mark.parametrize("slug", RESERVED_SLUGS)
def test_onboarding_a_reserved_slug_is_400(shared, slug, route):
    body = onboard_body(slug) if "organizations" in route else {"tenant_id": slug}
    assert_error(shared.onboard.post(route, headers=shared.root, json=body), 400)


def test_identical_concurrent_onboardings_create_exactly_one_org(runtime, onboard_client, root_headers):
    bootstrap(onboard_client, root_headers)
    barrier, results, lock = threading.Barrier(6), [], threading.Lock()

    def onboard() -> None:
        barrier.wait()
        response = onboard_client.post(
            "/api/v1/organizations/onboard", headers=root_headers, json=onboard_body("initech")
        )
        with lock:
            results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=onboard) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(status for status, _ in results) == [201] + [409] * 5, results
    key = next(body["api_key"] for status, body in results if status == 201)
    assert control_counts(runtime)["org_profiles"] == 1
    active = runtime.warehouse.query(
        "SELECT COUNT(*) AS n FROM organizations.org_api_keys WHERE org_slug = @org AND status = 'ACTIVE'",
        {"org": "initech"},
    )
    assert active == [{"n": 1}]
    assert_json(onboard_client.get("/api/v1/integrations/initech", headers={"X-API-Key": key}), 200)


@pytest.mark.parametrize(
    "slug",
    ["Acme", "ab", "1acme", "acme-co", "acme.co", "a" * 51, "acme corp", "_acme"],
)
def test_onboarding_an_invalid_slug_is_422(shared, slug):
    response = shared.onboard.post(
        "/api/v1/organizations/onboard", headers=shared.root, json=onboard_body(slug)
    )
    assert_error(response, 422)


@pytest.mark.parametrize("route", ["/api/v1/organizations/onboard", "/api/v1/customers/onboard"])
def test_onboard_requires_the_root_key(shared, route):
    body = onboard_body("initech") if "organizations" in route else {"tenant_id": "initech"}
    for headers in ({}, shared.acme, {"X-CA-Root-Key": "nope"}, {"X-CA-Root-Key": ""}):
        assert_error(shared.onboard.post(route, headers=headers, json=body), 401)
    assert not shared.rt.warehouse.dataset_exists("initech")


# -- customers/onboard (older name) ----------------------------------------------------------------


def test_customer_onboard_returns_201_with_tenant_id_and_a_working_key(
    runtime, onboard_client, trigger_client, root_headers
):
    bootstrap(onboard_client, root_headers)
    response = onboard_client.post(
        "/api/v1/customers/onboard",
        headers=root_headers,
        json={"tenant_id": "initech", "admin_email": "ops@initech.example.com"},
    )
    body = assert_json(response, 201)
    assert body["tenant_id"] == "initech"
    assert key_pattern("initech").fullmatch(body["api_key"])
    assert body["dataset_created"] is True
    assert set(body["tables_created"]) >= TENANT_TABLES
    assert body["dryrun_status"] == "COMPLETE"
    assert body["message"]
    assert runtime.warehouse.dataset_exists("initech")
    assert_json(
        trigger_client.get("/api/v1/pipelines/templates", headers={"X-API-Key": body["api_key"]}), 200
    )
    again = onboard_client.post(
        "/api/v1/customers/onboard", headers=root_headers, json={"tenant_id": "initech"}
    )
    assert_error(again, 409)


@pytest.mark.parametrize(
    "body", [{}, {"tenant_id": "BAD"}, {"tenant_id": "initech", "admin_email": "x"}, {"org_slug": "initech"}]
)
def test_customer_onboard_with_an_invalid_body_is_422(shared, body):
    assert_error(shared.onboard.post("/api/v1/customers/onboard", headers=shared.root, json=body), 422)


# -- API-key rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["root", "own_key"])
def test_rotation_issues_a_new_key_and_the_old_one_stops_at_once_everywhere(
    onboard_client, trigger_client, two_tenants, root_headers, caller
):
    old = two_tenants["acme"]
    # the old key is known (and cached) by both functions before the rotation
    assert_json(onboard_client.get("/api/v1/integrations/acme", headers=old), 200)
    assert_json(trigger_client.get("/api/v1/pipelines/templates", headers=old), 200)
    headers = root_headers if caller == "root" else old
    body = assert_json(
        onboard_client.post("/api/v1/organizations/acme/api-keys/rotate", headers=headers), 200
    )
    assert body["org_slug"] == "acme"
    assert key_pattern("acme").fullmatch(body["api_key"])
    assert body["api_key"] != old["X-API-Key"]
    new = {"X-API-Key": body["api_key"]}
    assert_error(onboard_client.get("/api/v1/integrations/acme", headers=old), 401)
    assert_error(trigger_client.get("/api/v1/pipelines/templates", headers=old), 401)
    assert_error(trigger_client.get("/api/v1/data/acme/tables", headers=old), 401)
    assert_error(onboard_client.post("/api/v1/organizations/acme/api-keys/rotate", headers=old), 401)
    assert_json(onboard_client.get("/api/v1/integrations/acme", headers=new), 200)
    assert_json(trigger_client.get("/api/v1/pipelines/templates", headers=new), 200)
    # the other tenant is untouched
    assert_json(trigger_client.get("/api/v1/data/globex/tables", headers=two_tenants["globex"]), 200)


def test_another_function_instance_drops_a_rotated_key_within_its_cache_ttl(
    runtime, onboard_client, trigger_client, two_tenants, root_headers
):
    """Deployed, onboard and trigger are separate instances with their own key caches (docs/architecture.md):
    the rotating instance refuses the old key at once; another instance only until its cached entry expires."""
    ttl = 0.5
    trigger_instance = build_runtime(runtime.settings.model_copy(update={"api_key_cache_ttl_seconds": ttl}))
    old = two_tenants["acme"]
    try:
        set_runtime(trigger_instance)
        assert_json(trigger_client.get("/api/v1/pipelines/templates", headers=old), 200)
        set_runtime(runtime)
        rotated = assert_json(
            onboard_client.post("/api/v1/organizations/acme/api-keys/rotate", headers=root_headers), 200
        )
        assert_error(onboard_client.get("/api/v1/integrations/acme", headers=old), 401)
        set_runtime(trigger_instance)
        assert_json(
            trigger_client.get("/api/v1/pipelines/templates", headers={"X-API-Key": rotated["api_key"]}), 200
        )
        # the documented window: the other instance still knows the old key from its cache...
        assert_json(trigger_client.get("/api/v1/pipelines/templates", headers=old), 200)
        time.sleep(ttl + 0.2)
        # ...and refuses it once the entry has expired, on every route
        assert_error(trigger_client.get("/api/v1/pipelines/templates", headers=old), 401)
        assert_error(trigger_client.get("/api/v1/data/acme/tables", headers=old), 401)
    finally:
        set_runtime(runtime)
        trigger_instance.close()


def test_rotating_twice_leaves_only_the_newest_key_working(onboard_client, two_tenants, root_headers):
    first = assert_json(
        onboard_client.post("/api/v1/organizations/acme/api-keys/rotate", headers=root_headers), 200
    )
    second = assert_json(
        onboard_client.post(
            "/api/v1/organizations/acme/api-keys/rotate", headers={"X-API-Key": first["api_key"]}
        ),
        200,
    )
    assert len({two_tenants["acme"]["X-API-Key"], first["api_key"], second["api_key"]}) == 3
    for stale in (two_tenants["acme"]["X-API-Key"], first["api_key"]):
        assert_error(onboard_client.get("/api/v1/integrations/acme", headers={"X-API-Key": stale}), 401)
    assert_json(
        onboard_client.get("/api/v1/integrations/acme", headers={"X-API-Key": second["api_key"]}), 200
    )


def test_rotating_another_orgs_key_is_403_and_changes_nothing(shared):
    body = assert_error(
        shared.onboard.post("/api/v1/organizations/acme/api-keys/rotate", headers=shared.globex), 403
    )
    assert "api_key" not in body
    assert_json(shared.onboard.get("/api/v1/integrations/acme", headers=shared.acme), 200)
    assert_json(shared.onboard.get("/api/v1/integrations/globex", headers=shared.globex), 200)


@pytest.mark.parametrize("org", ["initech", "zzz_unknown"])
def test_rotating_an_unknown_org_with_the_root_key_is_404(shared, org):
    assert_error(
        shared.onboard.post(f"/api/v1/organizations/{org}/api-keys/rotate", headers=shared.root), 404
    )


@pytest.mark.parametrize(
    "headers", [{}, {"X-CA-Root-Key": "wrong"}, {"X-CA-Root-Key": ""}, {"X-API-Key": "acme_api_short"}]
)
def test_rotating_without_a_valid_key_is_401(shared, headers):
    assert_error(shared.onboard.post("/api/v1/organizations/acme/api-keys/rotate", headers=headers), 401)
    assert_json(shared.onboard.get("/api/v1/integrations/acme", headers=shared.acme), 200)


# -- integrations ----------------------------------------------------------------------------------


def stored_credentials(runtime: Any, org: str) -> list[dict[str, Any]]:
    return runtime.warehouse.query(
        "SELECT * FROM organizations.org_integration_credentials WHERE org_slug = @org ORDER BY provider",
        {"org": org},
    )


def every_table_text(trigger_client: Any, org: str, headers: dict[str, str]) -> str:
    """Everything GET tables and GET rows show of a tenant, as one text."""
    listing = trigger_client.get(f"/api/v1/data/{org}/tables", headers=headers)
    texts = [listing.get_data(as_text=True)]
    for table in assert_json(listing, 200)["tables"]:
        rows = trigger_client.get(f"/api/v1/data/{org}/tables/{table['name']}?limit=1000", headers=headers)
        assert_json(rows, 200)
        texts.append(rows.get_data(as_text=True))
    return "\n".join(texts)


def service_account_key_file() -> tuple[dict[str, Any], str]:
    """A key file with a freshly generated private key, and one line of that key (the secret to look for)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key_file = {
        "type": "service_account",
        "project_id": "acme-billing-prod",
        "private_key": pem,
        "client_email": "convergence@acme-billing-prod.iam.gserviceaccount.com",
    }
    return key_file, pem.splitlines()[4]


INTEGRATION_CASES = {  # credential kind → provider, (credential, secret within it), settings
    "string": ("openai", lambda: (SECRET, SECRET), {"organization_id": "org-AcmeBilling01"}),
    "service-account": (
        "gcp",
        service_account_key_file,
        {"billing_export_table": "local-project.acme.gcp_billing_export_v1_0123ab_456789_abcdef"},
    ),
}


@pytest.mark.parametrize("kind", list(INTEGRATION_CASES))
def test_integration_secret_is_stored_encrypted_and_never_shown(
    runtime, onboard_client, trigger_client, two_tenants, kind
):
    provider, make_credential, settings = INTEGRATION_CASES[kind]
    credential, secret = make_credential()
    acme = two_tenants["acme"]
    # What the setup's check proves: the key against OpenAI's costs API (the replay server), the export table
    # in the tenant's dataset.
    export = load_schema("tenant", "gcp_billing_export_v1").model_copy(
        update={"name": "gcp_billing_export_v1_0123ab_456789_abcdef"}
    )
    runtime.warehouse.create_table("acme", export)
    with ProviderApiServer(openai_key=SECRET) as openai:
        runtime.settings = runtime.settings.model_copy(update={"openai_api_base": openai.base_url})
        response = onboard_client.post(
            f"/api/v1/integrations/acme/{provider}/setup",
            headers=acme,
            json={"credential": credential, "settings": settings},
        )
    body = assert_json(response, 200)
    assert body["org_slug"] == "acme" and body["provider"] == provider
    assert body["status"] == "ACTIVE" and body["validated"] is True, body["message"]
    assert secret not in response.get_data(as_text=True)

    listing = onboard_client.get("/api/v1/integrations/acme", headers=acme)
    integrations = assert_json(listing, 200)["integrations"]
    assert [i["provider"] for i in integrations] == [provider]
    assert integrations[0]["status"] and integrations[0]["created_at"]
    assert integrations[0]["settings"] == settings
    assert secret not in listing.get_data(as_text=True)

    for org in ("acme", "globex"):
        assert secret not in every_table_text(trigger_client, org, two_tenants[org])

    rows = stored_credentials(runtime, "acme")
    assert len(rows) == 1
    stored = rows[0]["encrypted_credential"]
    assert secret not in json.dumps(rows, default=str)
    assert base64.b64encode(secret.encode()).decode() not in json.dumps(rows, default=str)
    ciphertext = base64.b64decode(stored)
    plaintext = runtime.keyring.decrypt("acme", f"integration:{provider}", ciphertext).decode()
    assert secret in plaintext
    with pytest.raises(DecryptionFailed):
        runtime.keyring.decrypt("globex", f"integration:{provider}", ciphertext)
    with pytest.raises(DecryptionFailed):
        runtime.keyring.decrypt("acme", "integration:aws", ciphertext)

    runtime.warehouse.execute("CHECKPOINT")
    assert secret.encode() not in runtime.settings.duckdb_path.read_bytes()


def test_integration_setup_replaces_the_earlier_credential_of_a_provider(
    runtime, onboard_client, two_tenants
):
    acme = two_tenants["acme"]
    for secret in ("sk-FirstSecretValue0123456789", "sk-SecondSecretValue0123456789"):
        assert_json(
            onboard_client.post(
                "/api/v1/integrations/acme/deepseek/setup", headers=acme, json={"credential": secret}
            ),
            200,
        )
    aws = {"aws_access_key_id": "AKIAACME012345678901", "aws_secret_access_key": "a" * 40}
    assert_json(
        onboard_client.post(
            "/api/v1/integrations/acme/aws/setup",
            headers=acme,
            json={"credential": aws, "settings": {"cur_location": "/srv/acme-cur/reports"}},
        ),
        200,
    )
    integrations = assert_json(onboard_client.get("/api/v1/integrations/acme", headers=acme), 200)[
        "integrations"
    ]
    assert sorted(i["provider"] for i in integrations) == ["aws", "deepseek"]
    rows = {r["provider"]: r for r in stored_credentials(runtime, "acme")}
    assert set(rows) == {"aws", "deepseek"}
    decrypted = runtime.keyring.decrypt(
        "acme", "integration:deepseek", base64.b64decode(rows["deepseek"]["encrypted_credential"])
    )
    assert decrypted == b"sk-SecondSecretValue0123456789"
    # globex sees none of acme's integrations
    globex = assert_json(
        onboard_client.get("/api/v1/integrations/globex", headers=two_tenants["globex"]), 200
    )
    assert globex["integrations"] == []


@pytest.mark.parametrize("provider", ["dropbox", "GCP", "gcp_", "x"])
def test_integration_setup_of_an_unknown_provider_is_400_and_does_not_echo_the_secret(shared, provider):
    response = shared.onboard.post(
        f"/api/v1/integrations/acme/{provider}/setup", headers=shared.acme, json={"credential": SECRET}
    )
    assert_error(response, 400)
    assert SECRET not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "body",
    [
        {"credential": ""},
        {"credential": "   "},
        {"credential": {}},
        {},
        {"settings": {"a": 1}},
        {"credential": None},
        {"credential": 12345},
    ],
    ids=["empty-string", "blank", "empty-object", "missing", "settings-only", "null", "number"],
)
def test_integration_setup_with_an_empty_or_missing_credential_is_422(shared, body):
    assert_error(
        shared.onboard.post("/api/v1/integrations/acme/gcp/setup", headers=shared.acme, json=body), 422
    )


@pytest.mark.parametrize(
    "body",
    [{"credential": SECRET, "password": SECRET}, {"credential": SECRET, "settings": SECRET}],
    ids=["unknown-field", "settings-not-an-object"],
)
def test_integration_setup_with_an_invalid_body_is_422_without_echoing_the_secret(shared, body):
    response = shared.onboard.post("/api/v1/integrations/acme/gcp/setup", headers=shared.acme, json=body)
    assert_error(response, 422)
    assert SECRET not in response.get_data(as_text=True)


def test_integration_setup_with_an_oversized_credential_is_refused(shared):
    response = shared.onboard.post(
        "/api/v1/integrations/acme/gcp/setup", headers=shared.acme, json={"credential": "x" * (64 * 1024 + 1)}
    )
    assert response.status_code in (413, 422), response.status_code
    assert_error(response, response.status_code)


# -- error semantics of every onboard route --------------------------------------------------------

JSON_BODY_ROUTES = [
    ("/api/v1/admin/bootstrap", "root"),
    ("/api/v1/organizations/dryrun", "root"),
    ("/api/v1/organizations/onboard", "root"),
    ("/api/v1/customers/onboard", "root"),
    ("/api/v1/integrations/acme/gcp/setup", "tenant"),
]
TENANT_ROUTES = [
    ("post", "/api/v1/organizations/acme/api-keys/rotate"),
    ("post", "/api/v1/integrations/acme/gcp/setup"),
    ("get", "/api/v1/integrations/acme"),
]


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"a": 1', b"\xff\xfe", b"[]", b'[{"org_slug": "acme"}]', b'"text"', b"42", b"null"],
)
@pytest.mark.parametrize("path,auth", JSON_BODY_ROUTES)
def test_a_body_that_is_not_a_json_object_is_400(shared, path, auth, raw):
    headers = shared.root if auth == "root" else shared.acme
    response = shared.onboard.post(path, headers=headers, data=raw, content_type="application/json")
    assert_error(response, 400)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000], ids=["arrays", "objects"])
@pytest.mark.parametrize("path,auth", JSON_BODY_ROUTES)
def test_deeply_nested_json_is_400_not_500(shared, path, auth, raw):
    headers = shared.root if auth == "root" else shared.acme
    response = shared.onboard.post(path, headers=headers, data=raw, content_type="application/json")
    assert_error(response, 400)


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
        "wrong-root": {"X-CA-Root-Key": "wrong"},
    }


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "empty",
        "malformed",
        "bad-checksum",
        "well-formed-unknown",
        "other-slug-unknown",
        "root-as-api-key",
        "wrong-root",
    ],
)
@pytest.mark.parametrize("method,path", TENANT_ROUTES)
def test_tenant_routes_without_a_valid_key_are_401(shared, method, path, kind):
    headers = bad_key_headers(shared.acme["X-API-Key"])[kind]
    response = getattr(shared.onboard, method)(path, headers=headers, json={"credential": "x"})
    assert_error(response, 401)


@pytest.mark.parametrize("method,path", [m for m in TENANT_ROUTES if not m[1].endswith("/rotate")])
def test_the_root_key_does_not_open_tenant_routes(shared, method, path):
    response = getattr(shared.onboard, method)(path, headers=shared.root, json={"credential": "x"})
    assert_error(response, 401)


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/"),
        ("get", "/api/v1"),
        ("get", "/api/v1/organizations"),
        ("post", "/api/v1/organizations/acme"),
        ("get", "/api/v1/nope"),
        ("get", "/api/v1/pipelines/templates"),
        ("get", "/api/v1/data/acme/tables"),
        ("post", "/api/v1/pipelines/run/acme/gcp/example/dryrun"),
        ("get", "/health/extra"),
    ],
)
def test_unknown_routes_are_404_json(shared, method, path):
    """Trigger-function routes are unknown to the onboard function."""
    assert_error(getattr(shared.onboard, method)(path, headers=shared.acme), 404)


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/v1/admin/bootstrap"),
        ("delete", "/api/v1/organizations/onboard"),
        ("put", "/api/v1/organizations/dryrun"),
        ("get", "/api/v1/customers/onboard"),
        ("get", "/api/v1/organizations/acme/api-keys/rotate"),
        ("post", "/api/v1/integrations/acme"),
        ("get", "/api/v1/integrations/acme/gcp/setup"),
        ("post", "/health"),
        ("delete", "/openapi.json"),
        ("patch", "/api/v1/integrations/acme"),
    ],
)
def test_wrong_methods_are_405_json_with_allow(shared, method, path):
    response = getattr(shared.onboard, method)(path, headers=shared.root | shared.acme)
    assert_error(response, 405)
    assert response.headers.get("Allow")
