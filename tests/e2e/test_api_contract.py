"""Every route answers what it declares (common.api.routes.ROUTES), and /openapi.json says so.

One scenario drives every route through `convergence serve`'s WSGI app, each at least once to a success and
once to an error, and records every exchange. The tests then prove, per route, that each answer's status is
one the route declares and that its body validates against the model the route declares for that status
(ApiError for every error), and that the OpenAPI document gives each status exactly that model's schema.
A route added to ROUTES without a success and an error in the scenario fails here.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest
from werkzeug.exceptions import MethodNotAllowed

from common.api.http import Route, build_map
from common.api.openapi import REF_TEMPLATE, openapi_document
from common.api.routes import ROUTES
from common.contracts.errors import ApiError
from common.contracts.pipelines import RunStatus
from common.errors import DependencyUnavailable
from common.metadata.runs import RUN_STATUSES
from common.metadata.schemas import load_schema
from common.wiring import set_runtime, wsgi_app
from convergence.demo.provider_apis import ProviderApiServer
from tests.conftest import ROOT_KEY, wait_for_bus
from tests.e2e.support import runtime_in

REPO = Path(__file__).resolve().parents[2]
ROOT = {"X-CA-Root-Key": ROOT_KEY}
URL_MAP = build_map(ROUTES)
OPENAI_KEY = "sk-admin-Contract-Test-Value-0123456789abcdef"
DRYRUN = "/api/v1/pipelines/run/acme/gcp/example/dryrun"


def route_key(route: Route) -> str:
    return f"{route.method} {route.path}"


ROUTE = {route_key(route): route for route in ROUTES}


@dataclass(frozen=True)
class Exchange:
    """One request of the scenario and the answer it got."""

    route: Route
    request: str
    status: int
    mimetype: str
    body: Any


class ScenarioClient:
    """Sends requests to the WSGI app, finds the route each one reached, and records the exchange."""

    def __init__(self) -> None:
        self.client = wsgi_app("both").test_client()
        self.exchanges: list[Exchange] = []

    def send(self, method: str, path: str, expect: int, *, route: str | None = None, **kwargs: Any) -> Any:
        """Send a request, check it got `expect`, record it against its route; return the JSON body.

        `route` names the route when the path matches it for another method only (a 405).
        """
        response = self.client.open(path, method=method, **kwargs)
        text = response.get_data(as_text=True)
        assert response.status_code == expect, (method, path, response.status_code, text[:600])
        reached = self._route_of(method, path) if route is None else ROUTE[route]
        if route is not None:
            assert self._route_of(reached.method, path) is reached, (route, path)
        body = json.loads(text) if response.mimetype == "application/json" else text
        self.exchanges.append(
            Exchange(reached, f"{method} {path}", response.status_code, response.mimetype, body)
        )
        return body

    @staticmethod
    def _route_of(method: str, path: str) -> Route:
        try:
            index, _ = URL_MAP.bind("localhost").match(path.split("?", 1)[0], method=method)
        except MethodNotAllowed:
            raise AssertionError(f"{method} {path} reaches no route: name the route it is about") from None
        return ROUTES[index]


def focus_costs_row(day: str, provider: str, service: str, cost: float, currency: str) -> dict[str, Any]:
    """A focus_costs row: required columns filled, the ones a cost summary reads set from the arguments."""
    filler = {"STRING": "x", "FLOAT": 0.0, "FLOAT64": 0.0, "INTEGER": 0, "INT64": 0, "BOOLEAN": False,
              "BOOL": False, "DATE": dt.date(2024, 5, 1), "TIMESTAMP": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)}  # fmt: skip
    row = {
        f.name: filler[f.type] for f in load_schema("tenant", "focus_costs").fields if f.mode == "REQUIRED"
    }
    start = dt.datetime.fromisoformat(f"{day}T12:00:00+00:00")
    return row | {
        "ChargePeriodStart": start, "ChargePeriodEnd": start + dt.timedelta(hours=1), "ProviderName": provider,
        "ServiceName": service, "BilledCost": cost, "EffectiveCost": cost, "ListCost": cost, "ContractedCost": cost,
        "BillingCurrency": currency, "x_Source": provider.lower(),
    }  # fmt: skip


def drive_every_route(rt: Any, api: ScenarioClient) -> None:
    """The scenario: each route of the contract to a success and to an error, in an order that needs no fakes."""
    send = api.send
    send("GET", "/health", 200)
    send("GET", "/openapi.json", 200)
    send("POST", "/openapi.json", 405, route="GET /openapi.json")
    send("GET", "/docs", 200)
    send("POST", "/docs", 405, route="GET /docs")

    send("POST", "/api/v1/admin/bootstrap", 401, json={})
    send("POST", "/api/v1/admin/bootstrap", 200, headers=ROOT, json={})
    send("POST", "/api/v1/organizations/dryrun", 422, headers=ROOT, json={"org_slug": "acme"})
    org = {"org_slug": "acme", "company_name": "Acme", "admin_email": "admin@acme.example.com"}
    send("POST", "/api/v1/organizations/dryrun", 200, headers=ROOT, json=org)
    send("POST", "/api/v1/organizations/onboard", 201, headers=ROOT, json=org)
    send("POST", "/api/v1/organizations/onboard", 409, headers=ROOT, json=org)
    send("POST", "/api/v1/customers/onboard", 201, headers=ROOT, json={"tenant_id": "globex"})
    send("POST", "/api/v1/customers/onboard", 409, headers=ROOT, json={"tenant_id": "acme"})
    acme, globex = (
        {
            "X-API-Key": send("POST", f"/api/v1/organizations/{org}/api-keys/rotate", 200, headers=ROOT)[
                "api_key"
            ]
        }
        for org in ("acme", "globex")
    )
    send("POST", "/api/v1/organizations/nobody/api-keys/rotate", 404, headers=ROOT)

    notifications = "/api/v1/organizations/acme/notifications"
    send("GET", notifications, 200, headers=acme)
    send("GET", notifications, 403, headers=globex)
    send("GET", "/api/v1/organizations/nobody/notifications", 404, headers=ROOT)
    send("PUT", notifications, 200, headers=acme, json={"emails": ["finops@acme.example.com"]})
    send("PUT", notifications, 200, headers=ROOT, json={"emails": [], "on_failure": True})
    send("PUT", notifications, 422, headers=acme, json={"emails": ["not-an-address"]})
    send("PUT", notifications, 400, headers=acme, data="{", content_type="application/json")
    send("PUT", notifications, 403, headers=globex, json={"emails": []})

    setup = {"credential": OPENAI_KEY, "settings": {"organization_id": "org-AcmeBilling01"}}
    with ProviderApiServer(openai_key=OPENAI_KEY) as replay:  # OpenAI's costs API, which the checks call
        rt.settings = rt.settings.model_copy(update={"openai_api_base": replay.base_url})
        send("POST", "/api/v1/integrations/acme/openai/setup", 200, headers=acme, json=setup)
        send("POST", "/api/v1/integrations/acme/nope/setup", 400, headers=acme, json=setup)
        send("GET", "/api/v1/integrations/acme", 200, headers=acme)
        send("GET", "/api/v1/integrations/acme", 403, headers=globex)
        send("POST", "/api/v1/integrations/acme/openai/validate", 200, headers=acme)
        send("POST", "/api/v1/integrations/acme/openai/validate", 403, headers=globex)
        send("POST", "/api/v1/integrations/acme/anthropic/validate", 404, headers=acme)
        send("GET", "/api/v1/integrations/acme/openai", 200, headers=acme)
        send("GET", "/api/v1/integrations/acme/anthropic", 404, headers=acme)
    send("DELETE", "/api/v1/integrations/acme/openai", 403, headers=globex)
    send("DELETE", "/api/v1/integrations/acme/openai", 200, headers=acme)
    send("DELETE", "/api/v1/integrations/acme/openai", 404, headers=acme)
    send("DELETE", "/api/v1/integrations/acme/nope", 400, headers=acme)

    run_id = send("POST", DRYRUN, 202, headers=acme, json={"trigger_by": "contract"})["pipeline_logging_id"]
    send("POST", "/api/v1/pipelines/run/acme/gcp/example/nope", 404, headers=acme, json={})
    wait_for_bus(rt)
    send("GET", f"/api/v1/pipelines/runs/{run_id}", 200, headers=acme)
    send("GET", f"/api/v1/pipelines/runs/{run_id}", 404, headers=globex)
    send("GET", f"/api/v1/pipelines/status/acme/{run_id}", 200, headers=acme)
    send("GET", f"/api/v1/pipelines/status/acme/{run_id}", 403, headers=globex)
    send("GET", "/api/v1/pipelines/runs?status=COMPLETE&limit=10", 200, headers=acme)
    send("GET", "/api/v1/pipelines/runs?limit=0", 400, headers=acme)
    send("GET", "/api/v1/pipelines/templates", 200, headers=acme)
    send("GET", "/api/v1/pipelines/templates", 401)

    upload, rows = "/api/v1/data/acme/uploads/acme_costs", b"sku,amount\nvm,1.5\ndisk,2.25\nip,0.5\n"
    send("POST", upload, 201, headers=acme, data=rows, content_type="text/csv")
    send("POST", f"{upload}?mode=wipe", 400, headers=acme, data=rows, content_type="text/csv")
    send("POST", upload, 415, headers=acme, data=rows, content_type="text/plain")
    send("GET", "/api/v1/data/acme/tables", 200, headers=acme)
    send("GET", "/api/v1/data/acme/tables", 403, headers=globex)
    send("GET", "/api/v1/data/acme/tables/acme_costs?limit=2", 200, headers=acme)
    send("GET", "/api/v1/data/acme/tables/acme_costs?offset=2", 200, headers=acme)
    send("GET", "/api/v1/data/acme/tables/acme_costs?limit=x", 400, headers=acme)
    send("GET", "/api/v1/data/acme/tables/nope", 404, headers=acme)

    rt.warehouse.create_table("acme", load_schema("tenant", "focus_costs"))
    rt.warehouse.insert_rows("acme", "focus_costs", [
        focus_costs_row("2024-05-01", "AWS", "EC2", 10.25, "USD"),
        focus_costs_row("2024-05-02", "GCP", "BigQuery", 4.5, "USD"),
        focus_costs_row("2024-05-03", "Azure", "VMs", 3.0, "EUR"),
    ])  # fmt: skip
    may = "start=2024-05-01&end=2024-05-31"
    send("GET", f"/api/v1/costs/acme/summary?{may}&end=2024-05-02", 400, headers=acme)  # end given twice
    send("GET", "/api/v1/costs/acme/summary?start=2024-05-01&end=2024-05-02", 200, headers=acme)
    send("GET", f"/api/v1/costs/acme/summary?{may}&group_by=day", 200, headers=acme)  # two currencies
    send("GET", f"/api/v1/costs/acme/summary?{may}&convert_to=USD", 422, headers=acme)  # no exchange_rates
    send("POST", "/api/v1/data/acme/uploads/exchange_rates", 201, headers=acme,
         data=b"from_currency,to_currency,rate\nEUR,USD,1.1\n", content_type="text/csv")  # fmt: skip
    send("GET", f"/api/v1/costs/acme/summary?{may}&convert_to=USD", 200, headers=acme)
    send("GET", f"/api/v1/costs/acme/summary?{may}&group_by=sku", 400, headers=acme)

    schedule = {"template": "gcp/example/dryrun", "cron": "0 6 * * *", "name": "daily"}
    schedule_id = send("POST", "/api/v1/schedules/acme", 201, headers=acme, json=schedule)["schedule_id"]
    disabled, unknown = (
        schedule | {"name": "off", "enabled": False},
        schedule | {"template": "gcp/example/nope"},
    )
    send("POST", "/api/v1/schedules/acme", 201, headers=acme, json=disabled)
    send("POST", "/api/v1/schedules/acme", 409, headers=acme, json=schedule)
    send("POST", "/api/v1/schedules/acme", 400, headers=acme, json=unknown)
    send("GET", "/api/v1/schedules/acme", 200, headers=acme)
    send("GET", "/api/v1/schedules/acme", 403, headers=globex)
    send("DELETE", f"/api/v1/schedules/acme/{schedule_id}", 200, headers=acme)
    send("DELETE", f"/api/v1/schedules/acme/{schedule_id}", 404, headers=acme)

    bulk = {"template": "gcp/example/dryrun", "tenants": ["acme", "globex"], "trigger_by": "contract"}
    bulk_id = send("POST", "/api/v1/admin/runs/bulk", 202, headers=ROOT, json=bulk)["bulk_id"]
    send("POST", "/api/v1/admin/runs/bulk", 400, headers=ROOT, json=bulk | {"template": "gcp/example/nope"})
    send("POST", "/api/v1/admin/runs/bulk", 401, headers=acme, json=bulk)
    wait_for_bus(rt)
    send("GET", f"/api/v1/admin/runs/bulk/{bulk_id}", 200, headers=ROOT)
    send("GET", "/api/v1/admin/runs/bulk/00000000-0000-4000-8000-000000000000", 404, headers=ROOT)

    def warehouse_down() -> None:
        raise DependencyUnavailable("the warehouse does not answer")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rt.warehouse, "ping", warehouse_down)
        send("GET", "/health", 503)


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Exchange]]:
    """Every exchange of the scenario, on a platform of its own."""
    rt = runtime_in(tmp_path_factory.mktemp("contract") / "home")
    set_runtime(rt)
    api = ScenarioClient()
    try:
        drive_every_route(rt, api)
    finally:
        set_runtime(None)
    yield api.exchanges
    rt.close()


@pytest.fixture(scope="module")
def served_document(exchanges: list[Exchange]) -> dict[str, Any]:
    """The OpenAPI document `convergence serve` answered with."""
    return next(e.body for e in exchanges if e.request == "GET /openapi.json" and e.status == 200)


@pytest.mark.parametrize("route", ROUTES, ids=route_key)
def test_route_is_driven_to_a_success_and_to_an_error(exchanges, route):
    statuses = {e.status for e in exchanges if e.route is route}
    assert statuses & set(route.responses), f"the scenario never gets a success from {route_key(route)}"
    assert statuses - set(route.responses), f"the scenario never gets an error from {route_key(route)}"


@pytest.mark.parametrize("route", ROUTES, ids=route_key)
def test_every_answer_of_a_route_has_a_status_and_body_it_declares(exchanges, route):
    answered = [e for e in exchanges if e.route is route]
    assert answered, f"the scenario never reaches {route_key(route)}"
    for exchange in answered:
        assert exchange.status in route.statuses, (exchange.request, exchange.status, route.statuses)
        media_type = route.media_type if exchange.status in route.responses else "application/json"
        assert exchange.mimetype == media_type, exchange.request
        route.answer_model(exchange.status).model_validate(exchange.body)


def test_errors_are_answered_with_the_shared_error_model(exchanges):
    errors = [e for e in exchanges if e.status >= 400]
    assert {e.status for e in errors} >= {400, 401, 403, 404, 405, 409, 415, 422, 503}
    for exchange in errors:
        assert exchange.route.answer_model(exchange.status) is ApiError
        assert ApiError.model_validate(exchange.body).error, exchange.request


def test_the_scenario_sees_both_shapes_of_cost_summary_groups(exchanges):
    """One currency gives groups of {key, cost}; several give one group per key and currency."""
    summaries = [e.body for e in exchanges if e.request.startswith("GET /api/v1/costs/") and e.status == 200]
    assert any(s["currency"] and all(set(g) == {"key", "cost"} for g in s["groups"]) for s in summaries)
    assert any(s["currency"] is None and s["groups"] and "currency" in s["groups"][0] for s in summaries)


def test_served_openapi_document_is_the_one_generated_from_the_route_table(served_document):
    assert served_document == json.loads(json.dumps(openapi_document(ROUTES)))


@pytest.mark.parametrize("route", ROUTES, ids=route_key)
def test_openapi_gives_every_status_of_a_route_the_schema_of_its_declared_model(served_document, route):
    path = route.path.replace("<", "{").replace(">", "}")
    operation = served_document["paths"][path][route.method.lower()]
    assert set(operation["responses"]) == {str(status) for status in route.statuses}
    schemas = served_document["components"]["schemas"]
    for status in route.statuses:
        model = route.answer_model(status)
        media_type = route.media_type if status in route.responses else "application/json"
        ref = operation["responses"][str(status)]["content"][media_type]["schema"]["$ref"]
        assert ref == REF_TEMPLATE.format(model=model.__name__)
        generated = model.model_json_schema(by_alias=True, mode="serialization", ref_template=REF_TEMPLATE)
        defs = generated.pop("$defs", {})
        assert schemas[model.__name__] == generated
        assert all(schemas[name] == definition for name, definition in defs.items())
    if route.body is not None:
        body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert body == REF_TEMPLATE.format(model=route.body.__name__)
    if route.query is not None:
        documented = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert documented == set(route.query.model_fields)


def test_run_status_of_the_contract_is_the_one_runs_are_recorded_with():
    assert get_args(RunStatus) == RUN_STATUSES


def test_openapi_module_builds_a_document_without_importing_the_route_table():
    code = (
        "import sys; import common.api.openapi; "
        "assert 'common.api.routes' not in sys.modules, 'common.api.openapi imports the route table'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
