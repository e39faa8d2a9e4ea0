"""GET /api/v1/costs/{org}/summary (CONTRACT §2) through the trigger function and `convergence serve`'s app.

focus_costs rows are written straight into the tenant's table (FOCUS 1.2 schema) so each case controls
exactly which costs, days and currencies are in range; exchange rates arrive the way a tenant sends them,
as a CSV upload through the data route.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from common.metadata.schemas import load_schema
from common.services import costs
from common.warehouse.bigquery import BigQueryWarehouse
from common.wiring import wsgi_app
from tests.e2e.support import assert_error, assert_json

UTC = dt.UTC
MAY = "?start=2024-05-01&end=2024-05-31"
FILLER = {
    "STRING": "x",
    "FLOAT": 0.0,
    "FLOAT64": 0.0,
    "INTEGER": 0,
    "INT64": 0,
    "BOOLEAN": False,
    "BOOL": False,
    "DATE": dt.date(2024, 5, 1),
    "TIMESTAMP": dt.datetime(2024, 5, 1, tzinfo=UTC),
}


def focus_row(
    day: str,
    provider: str,
    service: str,
    cost: float,
    currency: str = "USD",
    *,
    at: str = "12:00:00",
    effective: float | None = None,
) -> dict[str, Any]:
    """One FOCUS 1.2 row: every required column filled, the ones a summary reads set from the arguments."""
    row: dict[str, Any] = {
        f.name: FILLER[f.type] for f in load_schema("tenant", "focus_costs").fields if f.mode == "REQUIRED"
    }
    start = dt.datetime.fromisoformat(f"{day}T{at}+00:00")
    row |= {
        "ChargePeriodStart": start,
        "ChargePeriodEnd": start + dt.timedelta(hours=1),
        "ProviderName": provider,
        "ServiceName": service,
        "BilledCost": cost,
        "EffectiveCost": cost if effective is None else effective,
        "ListCost": cost * 2,
        "ContractedCost": cost,
        "BillingCurrency": currency,
        "x_Source": provider.lower(),
    }
    return row


def insert_costs(runtime: Any, org: str, rows: list[dict[str, Any]]) -> None:
    runtime.warehouse.create_table(org, load_schema("tenant", "focus_costs"))
    runtime.warehouse.insert_rows(org, "focus_costs", rows)


def upload_rates(client: Any, headers: dict[str, str], csv_text: str, org: str = "acme") -> None:
    response = client.post(
        f"/api/v1/data/{org}/uploads/exchange_rates?mode=replace",
        headers=headers,
        data=csv_text.encode(),
        content_type="text/csv",
    )
    assert_json(response, 201)


def summary(client: Any, headers: dict[str, str], query: str = "", org: str = "acme") -> Any:
    return client.get(f"/api/v1/costs/{org}/summary{query}", headers=headers)


@pytest.fixture
def acme(onboard_org: Callable[[str], str]) -> dict[str, str]:
    return {"X-API-Key": onboard_org("acme")}


MAY_USD = [
    focus_row("2024-05-01", "AWS", "EC2", 10.5),
    focus_row("2024-05-03", "AWS", "S3", 2.25),
    focus_row("2024-05-01", "Google Cloud", "Compute Engine", 20.125),
    focus_row("2024-05-02", "Microsoft", "Virtual Machines", 0.1),
    focus_row("2024-05-03", "Microsoft", "Virtual Machines", 0.2),
]


# -- one currency ------------------------------------------------------------------------------------


def test_costs_by_provider_are_summed_per_provider_highest_first(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, MAY + "&group_by=provider"), 200)
    assert body["currency"] == "USD"
    assert body["total"] == 33.175
    assert body["groups"] == [
        {"key": "Google Cloud", "cost": 20.125},
        {"key": "AWS", "cost": 12.75},
        {"key": "Microsoft", "cost": 0.3},
    ]
    assert body["start"] == "2024-05-01" and body["end"] == "2024-05-31"
    assert body["group_by"] == "provider" and body["metric"] == "BilledCost" and body["rows"] == 5
    assert body["by_currency"] == [{"currency": "USD", "total": 33.175, "rows": 5, "groups": body["groups"]}]
    assert body["conversion"] is None


def test_provider_is_the_default_grouping(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, MAY), 200)
    assert body["group_by"] == "provider"
    assert [g["key"] for g in body["groups"]] == ["Google Cloud", "AWS", "Microsoft"]


def test_costs_by_service_are_summed_per_service(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, MAY + "&group_by=service"), 200)
    assert body["total"] == 33.175
    assert body["groups"] == [
        {"key": "Compute Engine", "cost": 20.125},
        {"key": "EC2", "cost": 10.5},
        {"key": "S3", "cost": 2.25},
        {"key": "Virtual Machines", "cost": 0.3},
    ]


def test_costs_by_day_are_keyed_by_iso_day_in_date_order(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, MAY + "&group_by=day"), 200)
    assert body["groups"] == [
        {"key": "2024-05-01", "cost": 30.625},
        {"key": "2024-05-02", "cost": 0.1},
        {"key": "2024-05-03", "cost": 2.45},
    ]
    assert body["total"] == 33.175


def test_metric_chooses_the_focus_cost_column(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", [focus_row("2024-05-01", "AWS", "EC2", 10.0, effective=7.5)])
    effective = assert_json(summary(trigger_client, acme, MAY + "&metric=EffectiveCost"), 200)
    listed = assert_json(summary(trigger_client, acme, MAY + "&metric=ListCost"), 200)
    assert (effective["metric"], effective["total"]) == ("EffectiveCost", 7.5)
    assert (listed["metric"], listed["total"]) == ("ListCost", 20.0)


def test_costs_are_rounded_to_six_decimals_after_summing(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", [focus_row("2024-05-01", "AWS", "EC2", 0.0000004) for _ in range(3)])
    body = assert_json(summary(trigger_client, acme, MAY), 200)
    assert body["total"] == 0.000001 and body["groups"] == [{"key": "AWS", "cost": 0.000001}]


def test_the_range_is_whole_utc_days_on_charge_period_start_both_ends_included(runtime, trigger_client, acme):
    insert_costs(
        runtime,
        "acme",
        [
            focus_row("2024-04-30", "AWS", "EC2", 1.0, at="23:59:59"),
            focus_row("2024-05-01", "AWS", "EC2", 2.0, at="00:00:00"),
            focus_row("2024-05-02", "AWS", "EC2", 4.0, at="23:59:59"),
            focus_row("2024-05-03", "AWS", "EC2", 8.0, at="00:00:00"),
        ],
    )
    body = assert_json(summary(trigger_client, acme, "?start=2024-05-01&end=2024-05-02"), 200)
    assert (body["total"], body["rows"]) == (6.0, 2)
    one_day = assert_json(summary(trigger_client, acme, "?start=2024-05-03&end=2024-05-03"), 200)
    assert (one_day["total"], one_day["rows"]) == (8.0, 1)


def test_without_dates_the_summary_covers_this_utc_month_to_today(runtime, trigger_client, acme):
    today = dt.datetime.now(UTC).date()
    first = today.replace(day=1)
    insert_costs(
        runtime,
        "acme",
        [
            focus_row(today.isoformat(), "AWS", "EC2", 1.0),
            focus_row(first.isoformat(), "AWS", "EC2", 2.0, at="00:00:00"),
            focus_row((first - dt.timedelta(days=1)).isoformat(), "AWS", "EC2", 4.0, at="23:59:59"),
            focus_row((today + dt.timedelta(days=1)).isoformat(), "AWS", "EC2", 8.0, at="00:00:00"),
        ],
    )
    body = assert_json(summary(trigger_client, acme), 200)
    assert (body["start"], body["end"]) == (first.isoformat(), today.isoformat())
    assert body["total"] == 3.0


def test_with_only_an_end_the_summary_starts_on_the_first_of_that_month(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD + [focus_row("2024-04-30", "AWS", "EC2", 100.0)])
    body = assert_json(summary(trigger_client, acme, "?end=2024-05-02"), 200)
    assert (body["start"], body["end"]) == ("2024-05-01", "2024-05-02")
    assert body["total"] == 30.725


def test_no_focus_costs_table_or_no_rows_in_range_is_an_empty_summary(runtime, trigger_client, acme):
    empty = {"currency": None, "total": 0, "groups": [], "rows": 0, "by_currency": []}
    body = assert_json(summary(trigger_client, acme, MAY), 200)
    assert {k: body[k] for k in empty} == empty
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, "?start=2023-01-01&end=2023-01-31"), 200)
    assert {k: body[k] for k in empty} == empty


# -- several currencies ------------------------------------------------------------------------------

MIXED = [
    focus_row("2024-05-01", "AWS", "EC2", 10.0, "USD"),
    focus_row("2024-05-02", "AWS", "EC2", 5.5, "USD"),
    focus_row("2024-05-01", "Google Cloud", "BigQuery", 3.0, "USD"),
    focus_row("2024-05-01", "AWS", "EC2", 100.0, "CAD"),
    focus_row("2024-05-02", "Microsoft", "Storage", 40.0, "CAD"),
]


def test_costs_in_two_currencies_are_never_added_together(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MIXED)
    body = assert_json(summary(trigger_client, acme, MAY), 200)
    assert body["currency"] is None and body["total"] is None
    assert "per currency" in body["message"] and "CAD" in body["message"] and "USD" in body["message"]
    assert sorted((g["key"], g["currency"], g["cost"]) for g in body["groups"]) == [
        ("AWS", "CAD", 100.0),
        ("AWS", "USD", 15.5),
        ("Google Cloud", "USD", 3.0),
        ("Microsoft", "CAD", 40.0),
    ]
    assert body["by_currency"] == [
        {
            "currency": "CAD",
            "total": 140.0,
            "rows": 2,
            "groups": [{"key": "AWS", "cost": 100.0}, {"key": "Microsoft", "cost": 40.0}],
        },
        {
            "currency": "USD",
            "total": 18.5,
            "rows": 3,
            "groups": [{"key": "AWS", "cost": 15.5}, {"key": "Google Cloud", "cost": 3.0}],
        },
    ]
    assert body["rows"] == 5


def test_a_range_holding_one_of_the_currencies_has_a_plain_total(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MIXED + [focus_row("2024-06-01", "AWS", "EC2", 7.0, "USD")])
    body = assert_json(summary(trigger_client, acme, "?start=2024-06-01&end=2024-06-30"), 200)
    assert (body["currency"], body["total"], body["message"]) == ("USD", 7.0, None)


def test_convert_to_uses_the_tenants_uploaded_rates_and_lists_them(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MIXED)
    upload_rates(
        trigger_client, acme, "from_currency,to_currency,rate\nCAD,USD,0.75\nEUR,USD,1.1\nUSD,CAD,1.3\n"
    )
    body = assert_json(summary(trigger_client, acme, MAY + "&convert_to=USD"), 200)
    assert body["currency"] == "USD"
    assert body["total"] == 123.5  # 18.5 USD + 140 CAD × 0.75
    assert body["groups"] == [
        {"key": "AWS", "cost": 90.5},
        {"key": "Microsoft", "cost": 30.0},
        {"key": "Google Cloud", "cost": 3.0},
    ]
    assert body["conversion"] == {"to": "USD", "rates": [{"from": "CAD", "rate": 0.75}]}
    assert [(c["currency"], c["total"]) for c in body["by_currency"]] == [("CAD", 140.0), ("USD", 18.5)]


def test_convert_to_by_day_converts_each_day_and_accepts_lower_case_codes(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MIXED)
    upload_rates(trigger_client, acme, "from_currency,to_currency,rate\nUSD,CAD,1.25\n")
    body = assert_json(summary(trigger_client, acme, MAY + "&group_by=day&convert_to=cad"), 200)
    assert (body["currency"], body["total"]) == ("CAD", 163.125)
    assert body["groups"] == [{"key": "2024-05-01", "cost": 116.25}, {"key": "2024-05-02", "cost": 46.875}]
    assert body["conversion"] == {"to": "CAD", "rates": [{"from": "USD", "rate": 1.25}]}


def test_converting_to_the_only_currency_in_range_needs_no_rate_table(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, MAY + "&convert_to=USD"), 200)
    assert (body["currency"], body["total"], body["conversion"]) == (
        "USD",
        33.175,
        {"to": "USD", "rates": []},
    )


def test_a_currency_without_a_rate_to_the_target_is_422_naming_it(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MIXED)
    upload_rates(trigger_client, acme, "from_currency,to_currency,rate\nUSD,EUR,0.9\nCAD,USD,0.75\n")
    body = assert_error(summary(trigger_client, acme, MAY + "&convert_to=EUR"), 422, "missing_exchange_rate")
    assert "CAD" in body["message"] and "EUR" in body["message"]
    assert body["currencies"] == ["CAD"]


def test_converting_without_an_exchange_rates_table_is_422(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MIXED)
    body = assert_error(summary(trigger_client, acme, MAY + "&convert_to=USD"), 422, "missing_exchange_rate")
    assert "exchange_rates" in body["message"] and "CAD" in body["message"]


@pytest.mark.parametrize(
    "rates,code",
    [
        ("from_currency,to_currency,rate\nCAD,USD,0.75\nCAD,USD,0.8\n", "ambiguous_exchange_rate"),
        ("from_currency,to_currency,rate\nCAD,USD,cheap\n", "invalid_exchange_rates"),
        ("from_currency,to_currency,rate\nCAD,USD,-0.75\n", "invalid_exchange_rates"),
        ("from_currency,to_currency,price\nCAD,USD,0.75\n", "invalid_exchange_rates"),
    ],
)
def test_unusable_exchange_rates_are_422_not_a_guess(runtime, trigger_client, acme, rates, code):
    insert_costs(runtime, "acme", MIXED)
    upload_rates(trigger_client, acme, rates)
    body = assert_error(summary(trigger_client, acme, MAY + "&convert_to=USD"), 422, code)
    assert "exchange_rates" in body["message"]


def test_an_uploaded_focus_costs_table_without_focus_columns_is_422(runtime, trigger_client, acme):
    response = trigger_client.post(
        "/api/v1/data/acme/uploads/focus_costs",
        headers=acme,
        data=b"cost,day\n1.5,2024-05-01\n",
        content_type="text/csv",
    )
    assert_error(response, 400, "upload_unknown_columns")  # focus_costs is declared: uploads must fit it
    # such a table, as an upload made it before uploads were fitted to the declared schema
    legacy = pa.table({"cost": [1.5], "day": ["2024-05-01"]})
    runtime.warehouse.load_arrow("acme", "focus_costs", legacy, mode="replace")
    body = assert_error(summary(trigger_client, acme, MAY), 422, "invalid_focus_costs")
    assert "ChargePeriodStart" in body["message"]


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query,parameter,hint",
    [
        ("?start=2024-13-01", "start", "YYYY-MM-DD"),
        ("?start=2024-02-30", "start", "YYYY-MM-DD"),
        ("?start=yesterday", "start", "YYYY-MM-DD"),
        ("?end=20240501", "end", "YYYY-MM-DD"),
        ("?end=2024-05-01T00:00:00", "end", "YYYY-MM-DD"),
        ("?start=2024-05-02&end=2024-05-01", "start", "after"),
        ("?start=2023-01-01&end=2024-02-05", "end", "spans 401 days"),
        ("?group_by=region", "group_by", "provider, service, day"),
        ("?metric=Cost", "metric", "BilledCost, EffectiveCost, ListCost, ContractedCost"),
        ("?convert_to=EURO", "convert_to", "ISO 4217"),
        ("?convert_to=E1R", "convert_to", "ISO 4217"),
        ("?groupby=service", "groupby", "unknown query parameter"),
        ("?group_by=day&group_by=service", "group_by", "once"),
    ],
)
def test_bad_query_parameters_are_400_naming_the_parameter(trigger_client, acme, query, parameter, hint):
    body = assert_error(summary(trigger_client, acme, query), 400, "invalid_query")
    assert body["parameter"] == parameter
    assert parameter in body["message"] and hint in body["message"]


def test_a_range_of_exactly_400_days_is_accepted(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    body = assert_json(summary(trigger_client, acme, "?start=2023-06-27&end=2024-07-30"), 200)
    assert body["total"] == 33.175


def test_hostile_parameter_values_are_refused_and_change_nothing(runtime, trigger_client, acme):
    insert_costs(runtime, "acme", MAY_USD)
    for query in (
        "?group_by=ProviderName",
        "?metric=BilledCost)%20FROM%20organizations.org_api_keys--",
        "?start=2024-05-01'%20OR%20'1'='1",
        "?convert_to=US'",
    ):
        assert_error(summary(trigger_client, acme, query), 400, "invalid_query")
    assert runtime.warehouse.count_rows("acme", "focus_costs") == 5


# -- tenants -----------------------------------------------------------------------------------------


def test_a_tenant_never_sees_another_tenants_costs(runtime, trigger_client, two_tenants):
    insert_costs(runtime, "acme", MAY_USD)
    insert_costs(runtime, "globex", [focus_row("2024-05-01", "Oracle", "Database", 999.0, "EUR")])
    acme = assert_json(summary(trigger_client, two_tenants["acme"], MAY), 200)
    globex = assert_json(summary(trigger_client, two_tenants["globex"], MAY, org="globex"), 200)
    assert (acme["currency"], acme["total"], acme["rows"]) == ("USD", 33.175, 5)
    assert "Oracle" not in str(acme) and "EUR" not in str(acme)
    assert globex["groups"] == [{"key": "Oracle", "cost": 999.0}] and globex["rows"] == 1


def test_another_tenants_key_is_403_and_reveals_nothing(runtime, trigger_client, two_tenants):
    insert_costs(runtime, "acme", MAY_USD)
    response = summary(trigger_client, two_tenants["globex"], MAY, org="acme")
    assert_error(response, 403)
    assert "Google Cloud" not in response.get_data(as_text=True)


def test_a_missing_or_wrong_key_is_401(trigger_client, acme):
    assert_error(summary(trigger_client, {}, MAY), 401)
    real = acme["X-API-Key"]
    assert_error(
        summary(trigger_client, {"X-API-Key": real[:-1] + ("A" if real[-1] != "A" else "B")}, MAY), 401
    )


def test_an_unknown_org_is_refused_as_on_the_data_routes(trigger_client, acme):
    costs = summary(trigger_client, acme, MAY, org="initech")
    tables = trigger_client.get("/api/v1/data/initech/tables", headers=acme)
    assert assert_error(costs, 403)["error"] == assert_error(tables, 403)["error"]


def test_only_get_is_allowed(trigger_client, acme):
    response = trigger_client.post("/api/v1/costs/acme/summary", headers=acme, json={})
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"] and "POST" not in response.headers["Allow"]


# -- where it is served, and how it is documented ----------------------------------------------------


def test_the_summary_is_the_same_on_bigquery_as_on_duckdb(runtime, acme, bigquery_emulator):
    """The GoogleSQL the service writes runs unchanged on BigQuery (bqemulator) and gives the same answers."""
    insert_costs(runtime, "acme", MIXED)
    queries = [
        [("start", ["2024-05-01"]), ("end", ["2024-05-31"])],
        [("start", ["2024-05-02"]), ("end", ["2024-05-02"]), ("group_by", ["day"]), ("metric", ["ListCost"])],
        [
            ("start", ["2024-05-01"]),
            ("end", ["2024-05-31"]),
            ("group_by", ["service"]),
            ("convert_to", ["USD"]),
        ],
    ]
    rates = pa.table({"from_currency": ["CAD"], "to_currency": ["USD"], "rate": [0.75]})
    runtime.warehouse.load_arrow("acme", "exchange_rates", rates)
    on_duckdb = [costs.summarise(runtime, "acme", costs.parse_query(q)) for q in queries]
    duckdb_warehouse = runtime.warehouse
    bigquery = BigQueryWarehouse(f"costs-{uuid.uuid4().hex[:12]}", "US", emulator_host=bigquery_emulator)
    runtime.warehouse = bigquery
    try:
        bigquery.create_dataset("acme")
        insert_costs(runtime, "acme", MIXED)
        bigquery.load_arrow("acme", "exchange_rates", rates)
        on_bigquery = [costs.summarise(runtime, "acme", costs.parse_query(q)) for q in queries]
    finally:
        runtime.warehouse = duckdb_warehouse
        bigquery.close()
    assert on_bigquery == on_duckdb
    assert [s["total"] for s in on_bigquery] == [None, None, 123.5]
    assert on_bigquery[1]["by_currency"][0]["groups"] == [{"key": "2024-05-02", "cost": 80.0}]


def test_convergence_serve_app_serves_the_cost_summary(runtime, acme):
    insert_costs(runtime, "acme", MAY_USD)
    client = wsgi_app("both").test_client()
    assert assert_json(client.get(f"/api/v1/costs/acme/summary{MAY}", headers=acme), 200)["total"] == 33.175


def test_openapi_describes_the_cost_summary_parameters_and_answers(trigger_client):
    doc = assert_json(trigger_client.get("/openapi.json"), 200)
    operation = doc["paths"]["/api/v1/costs/{org}/summary"]["get"]
    assert operation["security"] == [{"apiKey": []}]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["org"]["in"] == "path" and parameters["org"]["required"] is True
    query = {name: p for name, p in parameters.items() if p["in"] == "query"}
    assert set(query) == {"start", "end", "group_by", "metric", "convert_to"}
    assert not any(p["required"] for p in query.values())
    assert query["start"]["schema"] == {"type": "string", "format": "date"}
    assert query["group_by"]["schema"]["enum"] == ["provider", "service", "day"]
    assert query["group_by"]["schema"]["default"] == "provider"
    assert query["metric"]["schema"]["enum"] == ["BilledCost", "EffectiveCost", "ListCost", "ContractedCost"]
    assert re.fullmatch(query["convert_to"]["schema"]["pattern"], "EUR")
    assert {"200", "400", "401", "403", "422"} <= set(operation["responses"])
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    answer = doc["components"]["schemas"][ok]
    assert {
        "currency",
        "total",
        "groups",
        "start",
        "end",
        "group_by",
        "metric",
        "rows",
        "by_currency",
    } <= set(answer["required"])
    rate = doc["components"]["schemas"]["RateUsed"]
    assert set(rate["properties"]) == {"from", "rate"}
    assert "missing_exchange_rate" in operation["responses"]["422"]["description"]
