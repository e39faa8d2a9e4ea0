"""Uploads fit the declared schema (POST /api/v1/data/{org}/uploads/{table}), on DuckDB and on BigQuery.

Where configs/schemas/tenant/ declares a table, an upload in CSV, NDJSON or Parquet becomes exactly that
table, so the templates reading it run on it; an undeclared table keeps its inferred types, and a later
append is converted to them or refused. The export rows come from the demo's generator; the expected totals
are the generator's own, never read back from the platform.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.warehouse.bigquery import BigQueryWarehouse
from common.warehouse.schema import TableSchema
from common.warehouse.sql import table_ref
from common.wiring import set_runtime
from convergence.demo.gcp_billing import daily_totals, generate_billing_export
from tests.conftest import wait_for_bus
from tests.e2e.cost_support import Platform, fingerprint, platform_runtime
from tests.e2e.support import assert_error, assert_json

EXPORT = "gcp_billing_export_v1"
DAY = dt.date(2025, 11, 15)
ROWS = generate_billing_export("acme", DAY, 2, seed=7)  # the day and the next, so the day filter matters
NESTED = {f.name for f in load_schema("tenant", EXPORT).fields if f.fields or f.mode == "REPEATED"}
CONTENT_TYPES = {
    "csv": "text/csv",
    "ndjson": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


# -- the three encodings of the same rows -----------------------------------------------------------------


def iso_z(value: dt.datetime) -> str:
    """A timestamp as the failing export had it: 2025-11-15T00:30:00Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bigquery_utc(value: dt.datetime) -> str:
    """A timestamp in BigQuery's own text form: 2025-11-15 00:30:00.000000 UTC."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def json_value(value: Any, stamp: Callable[[dt.datetime], str] = iso_z) -> Any:
    if isinstance(value, dt.datetime):
        return stamp(value)
    if isinstance(value, dict):
        return {k: json_value(v, stamp) for k, v in value.items()}
    if isinstance(value, list):
        return [json_value(v, stamp) for v in value]
    return value


def ndjson_body(rows: list[dict[str, Any]], stamp: Callable[[dt.datetime], str] = iso_z) -> bytes:
    return "".join(json.dumps(json_value(row, stamp)) + "\n" for row in rows).encode()


def csv_body(rows: list[dict[str, Any]], stamp: Callable[[dt.datetime], str] = bigquery_utc) -> bytes:
    """Rows as CSV: RECORD and REPEATED columns as JSON text in their cells, NULL as an empty cell."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    sink = io.StringIO()
    writer = csv.DictWriter(sink, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {}
        for name, value in row.items():
            if value is None:
                cells[name] = ""
            elif isinstance(value, dict | list):
                cells[name] = json.dumps(json_value(value, stamp))
            elif isinstance(value, dt.datetime):
                cells[name] = stamp(value)
            else:
                cells[name] = repr(value) if isinstance(value, float) else str(value)
        writer.writerow(cells)
    return sink.getvalue().encode()


def parquet_body(rows: list[dict[str, Any]]) -> bytes:
    """Rows as Parquet with the types pyarrow infers from them (all-empty arrays come out as list<null>)."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


ENCODERS: dict[str, Callable[[list[dict[str, Any]]], bytes]] = {
    "csv": csv_body,
    "ndjson": ndjson_body,
    "parquet": parquet_body,
}


# -- driving the API --------------------------------------------------------------------------------------


def upload(client: Any, headers: dict, org: str, table: str, body: bytes, fmt: str, mode: str = "") -> Any:
    query = f"?mode={mode}" if mode else ""
    return client.post(
        f"/api/v1/data/{org}/uploads/{table}{query}",
        headers=headers,
        data=body,
        content_type=CONTENT_TYPES[fmt],
    )


def run_template(rt: Runtime, client: Any, headers: dict, org: str, template: str, day: dt.date) -> dict:
    """A run of gcp/cost/{template} for the day, driven by the bus to its end; the run."""
    response = client.post(
        f"/api/v1/pipelines/run/{org}/gcp/cost/{template}", headers=headers, json={"date": day.isoformat()}
    )
    run_id = assert_json(response, 202)["pipeline_logging_id"]
    wait_for_bus(rt, 120)
    return assert_json(client.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers), 200)


def assert_complete(run: dict[str, Any]) -> None:
    steps = {s["step_id"]: (s["status"], s["error_message"]) for s in run["steps"]}
    assert run["status"] == "COMPLETE", (run["error_message"], steps)


def rows_of(rt: Runtime, org: str, table: str) -> list[dict[str, Any]]:
    return rt.warehouse.query(f"SELECT * FROM {table_ref(org, table)}")


def daily_cost(rt: Runtime, org: str) -> list[tuple]:
    """billing_cost_daily of the day, as exact decimals of what was stored."""
    rows = rt.warehouse.query(
        f"SELECT * FROM {table_ref(org, 'billing_cost_daily')} WHERE usage_date = @d", {"d": DAY}
    )
    keys = ("service_description", "sku_description", "project_id", "location_region", "usage_unit")
    money = ("cost", "credits", "net_cost")
    return sorted(tuple(r[k] for k in keys) + tuple(Decimal(repr(r[k])) for k in money) for r in rows)


def focus_total(rt: Runtime, org: str) -> tuple[int, Decimal]:
    rows = rt.warehouse.query(
        f"SELECT BilledCost FROM {table_ref(org, 'focus_costs')} WHERE x_Source = 'gcp'"
    )
    return len(rows), sum((Decimal(repr(r["BilledCost"])) for r in rows), Decimal(0))


def expected_day() -> tuple[int, Decimal, Decimal]:
    """The day's export rows, and its cost and cost plus credits, from the generator's own totals."""
    totals = daily_totals(ROWS)[DAY]
    day_rows = [r for r in ROWS if r["usage_start_time"].date() == DAY]
    credits = sum(len(r["credits"]) for r in day_rows)
    net = Decimal(str(totals["cost"])) + Decimal(str(totals["credits"]))
    return len(day_rows) + credits, Decimal(str(totals["cost"])), net


def net_of(daily: list[tuple]) -> Decimal:
    return sum((row[-1] for row in daily), Decimal(0))


# -- the same export in three formats ----------------------------------------------------------------------


FORMAT_TENANTS = {"csv": "csv_tenant", "ndjson": "ndjson_tenant", "parquet": "parquet_tenant"}


@pytest.fixture
def three_tenants(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> dict[str, dict]:
    """One tenant per format, each holding the same export rows uploaded in its format."""
    headers = {}
    for fmt, org in FORMAT_TENANTS.items():
        headers[fmt] = {"X-API-Key": onboard_org(org)}
        body = assert_json(upload(trigger_client, headers[fmt], org, EXPORT, ENCODERS[fmt](ROWS), fmt), 201)
        assert body == {
            "table": EXPORT, "rows_loaded": len(ROWS), "mode": "append", "renamed_columns": {},
            "types_from": "declared",
        }  # fmt: skip
    return headers


def test_the_same_export_in_csv_ndjson_and_parquet_lands_the_same_rows(
    runtime: Runtime, three_tenants: dict[str, dict]
) -> None:
    landed = {fmt: fingerprint(rows_of(runtime, org, EXPORT)) for fmt, org in FORMAT_TENANTS.items()}

    assert landed["csv"] == landed["ndjson"] == landed["parquet"]
    assert sum(landed["csv"].values()) == len(ROWS)
    declared = [f.name for f in load_schema("tenant", EXPORT).fields]
    assert runtime.warehouse.table_columns("csv_tenant", EXPORT) == declared


def test_the_same_export_in_three_formats_gives_the_same_billing_cost_daily_and_focus_costs(
    runtime: Runtime, trigger_client: Any, three_tenants: dict[str, dict]
) -> None:
    rows, cost, net = expected_day()
    daily, focus = {}, {}
    for fmt, org in FORMAT_TENANTS.items():
        for template in ("cost_billing", "billing_focus"):
            assert_complete(run_template(runtime, trigger_client, three_tenants[fmt], org, template, DAY))
        daily[fmt], focus[fmt] = daily_cost(runtime, org), focus_total(runtime, org)

    assert daily["csv"] == daily["ndjson"] == daily["parquet"]
    assert focus["csv"] == focus["ndjson"] == focus["parquet"]
    assert round(net_of(daily["csv"]), 6) == net
    assert round(sum((row[5] for row in daily["csv"]), Decimal(0)), 6) == cost
    assert (focus["csv"][0], round(focus["csv"][1], 6)) == (rows, net)


def test_an_ndjson_export_with_z_timestamps_feeds_cost_billing(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_json(upload(trigger_client, headers, "acme", EXPORT, ndjson_body(ROWS), "ndjson"), 201)

    run = run_template(runtime, trigger_client, headers, "acme", "cost_billing", DAY)

    assert_complete(run)
    assert round(net_of(daily_cost(runtime, "acme")), 6) == expected_day()[2]


# -- timestamps, decimals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,written",
    [
        ("ndjson", "2025-11-15T00:30:00Z"),
        ("ndjson", "2025-11-15T02:30:00+02:00"),
        ("ndjson", "2025-11-14T19:30:00-05:00"),
        ("ndjson", "2025-11-15 00:30:00 UTC"),
        ("ndjson", "2025-11-15 00:30:00.000000 UTC"),
        ("csv", "2025-11-15T00:30:00Z"),
        ("csv", "2025-11-15 05:00:00+04:30"),
        ("csv", "2025-11-15 00:30:00 UTC"),
        ("csv", "2025-11-15 00:30:00"),
    ],
)
def test_a_timestamp_with_z_an_offset_or_utc_lands_as_its_instant_in_utc(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any, fmt: str, written: str
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    row = {"billing_account_id": "A", "usage_start_time": written, "cost": 1.25, "currency": "USD"}
    body = ndjson_body([row]) if fmt == "ndjson" else csv_body([row])
    assert_json(upload(trigger_client, headers, "acme", EXPORT, body, fmt), 201)

    (stored,) = runtime.warehouse.query(
        f"SELECT usage_start_time, DATE(usage_start_time) AS day FROM {table_ref('acme', EXPORT)}"
    )
    assert stored["usage_start_time"] == dt.datetime(2025, 11, 15, 0, 30, tzinfo=dt.UTC)
    assert stored["usage_start_time"].utcoffset() == dt.timedelta(0)
    assert stored["day"] == DAY
    assert_complete(run_template(runtime, trigger_client, headers, "acme", "cost_billing", DAY))


def test_numeric_appended_as_text_and_json_numbers_sums_exactly(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    first = pa.table({"line": ["seed"], "amount": pa.array([Decimal(0)], pa.decimal128(38, 9))})
    sink = io.BytesIO()
    pq.write_table(first, sink)
    assert (
        assert_json(
            upload(trigger_client, headers, "acme", "invoice_lines", sink.getvalue(), "parquet"), 201
        )["types_from"]
        == "inferred"
    )

    csv_upload = upload(
        trigger_client, headers, "acme", "invoice_lines", b"line,amount\na,0.1\nb,0.2\n", "csv"
    )
    ndjson = b'{"line": "c", "amount": 0.1}\n{"line": "d", "amount": "0.000000001"}\n'
    assert assert_json(csv_upload, 201)["types_from"] == "table"
    assert_json(upload(trigger_client, headers, "acme", "invoice_lines", ndjson, "ndjson"), 201)

    (row,) = runtime.warehouse.query(f"SELECT SUM(amount) AS total FROM {table_ref('acme', 'invoice_lines')}")
    assert row["total"] == Decimal("0.400000001")
    (three,) = runtime.warehouse.query(
        f"SELECT SUM(amount) AS total FROM {table_ref('acme', 'invoice_lines')} WHERE line IN ('a', 'b')"
    )
    assert three["total"] == Decimal("0.3")


# -- refusals ---------------------------------------------------------------------------------------------


def bad_timestamp_rows() -> list[dict[str, Any]]:
    rows = [dict(r) for r in ROWS[:5]]
    rows[2]["usage_start_time"] = "15/11/2025 00:30"
    return rows


def bad_body(fmt: str) -> bytes:
    rows = bad_timestamp_rows()
    if fmt == "parquet":  # a Parquet column is typed: the bad value travels as text in a text column
        for row in rows:
            row["usage_start_time"] = json_value(row["usage_start_time"])
        return parquet_body(rows)
    return ENCODERS[fmt](rows)


@pytest.mark.parametrize("fmt", list(ENCODERS))
def test_a_value_that_does_not_fit_is_400_naming_row_column_and_type_and_loads_nothing(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any, fmt: str
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_json(upload(trigger_client, headers, "acme", EXPORT, ndjson_body(ROWS[5:15]), "ndjson"), 201)
    before = fingerprint(rows_of(runtime, "acme", EXPORT))

    body = assert_error(upload(trigger_client, headers, "acme", EXPORT, bad_body(fmt), fmt), 400)

    assert body["error"] == "upload_type_mismatch"
    assert (body["row"], body["column"], body["expected"]) == (3, "usage_start_time", "TIMESTAMP")
    assert (
        "row 3" in body["message"]
        and "usage_start_time" in body["message"]
        and "TIMESTAMP" in body["message"]
    )
    assert "15/11/2025 00:30" in body["message"]
    assert fingerprint(rows_of(runtime, "acme", EXPORT)) == before


def test_a_refused_upload_into_an_absent_declared_table_creates_nothing(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_error(
        upload(trigger_client, headers, "acme", EXPORT, bad_body("csv"), "csv"), 400, "upload_type_mismatch"
    )
    assert not runtime.warehouse.table_exists("acme", EXPORT)


@pytest.mark.parametrize(
    "row,column,expected",
    [
        ({"cost": "twelve"}, "cost", "FLOAT64"),
        ({"credits": [{"amount": "lots"}]}, "credits[0].amount", "FLOAT64"),
        ({"credits": {"amount": -1.0}}, "credits", "REPEATED RECORD"),
        ({"service": {"id": "X", "colour": "red"}}, "service.colour", None),
        ({"tags": [{"key": "a", "inherited": "perhaps"}]}, "tags[0].inherited", "BOOL"),
        ({"usage_end_time": 1731630600}, "usage_end_time", "TIMESTAMP"),
    ],
)
def test_a_nested_or_scalar_mismatch_in_ndjson_names_its_path(
    runtime: Runtime,
    onboard_org: Callable[[str], str],
    trigger_client: Any,
    row: dict,
    column: str,
    expected: Any,
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    body = ndjson_body([{"billing_account_id": "A"}, {"billing_account_id": "B", **row}])

    refusal = assert_error(
        upload(trigger_client, headers, "acme", EXPORT, body, "ndjson"), 400, "upload_type_mismatch"
    )

    assert (refusal["row"], refusal["column"], refusal["expected"]) == (2, column, expected)
    assert column in refusal["message"]


def test_unknown_columns_are_refused_naming_each(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    body = b"billing_account_id,cost,colour,Size\nA,1.5,red,3\n"

    refusal = assert_error(
        upload(trigger_client, headers, "acme", EXPORT, body, "csv"), 400, "upload_unknown_columns"
    )

    assert refusal["unknown_columns"] == ["colour", "Size"]
    assert "colour" in refusal["message"] and "Size" in refusal["message"]
    assert not runtime.warehouse.table_exists("acme", EXPORT)


def test_missing_required_columns_are_refused_and_missing_nullable_ones_are_null(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    refusal = assert_error(
        upload(
            trigger_client, headers, "acme", "focus_costs", b"BilledCost,ServiceName\n1.5,Compute\n", "csv"
        ),
        400,
        "upload_missing_columns",
    )
    assert "ChargePeriodStart" in refusal["missing_columns"] and "ChargePeriodStart" in refusal["message"]
    assert "ServiceName" not in refusal["missing_columns"]

    body = b"BILLING_ACCOUNT_ID,Cost,usage_start_time\nA,2.5,2025-11-15T00:00:00Z\n"
    answer = assert_json(upload(trigger_client, headers, "acme", EXPORT, body, "csv"), 201)
    assert answer["renamed_columns"] == {"BILLING_ACCOUNT_ID": "billing_account_id", "Cost": "cost"}
    (row,) = rows_of(runtime, "acme", EXPORT)
    assert (row["billing_account_id"], row["cost"], row["currency"], row["service"]) == ("A", 2.5, None, None)
    assert row["credits"] == [] and row["labels"] == []


def test_a_required_value_left_empty_in_one_ndjson_row_is_refused_naming_it(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    rows = [
        {"usage_date": "2025-11-15", "cost": 1.0},
        {"usage_date": None, "cost": 2.0},
    ]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()

    refusal = assert_error(
        upload(trigger_client, headers, "acme", "billing_cost_daily", body, "ndjson"),
        400,
        "upload_type_mismatch",
    )

    assert (refusal["row"], refusal["column"]) == (2, "usage_date")
    assert "REQUIRED" in refusal["message"]


# -- replace, and a table left by an upload before it was declared -------------------------------------------


def test_replace_swaps_the_rows_and_keeps_the_declared_definition(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_json(upload(trigger_client, headers, "acme", EXPORT, csv_body(ROWS), "csv"), 201)
    declared = runtime.warehouse.table_schema("acme", EXPORT)

    answer = assert_json(
        upload(trigger_client, headers, "acme", EXPORT, parquet_body(ROWS[:3]), "parquet", "replace"), 201
    )

    assert (answer["rows_loaded"], answer["mode"], answer["types_from"]) == (3, "replace", "declared")
    assert runtime.warehouse.count_rows("acme", EXPORT) == 3
    assert runtime.warehouse.table_schema("acme", EXPORT) == declared
    assert runtime.warehouse.list_tables("acme").count(EXPORT) == 1
    assert not [t for t in runtime.warehouse.list_tables("acme") if t.startswith("_convergence_")]


def legacy_export(runtime: Runtime, org: str) -> None:
    """The export as an upload inferred it before the table's declaration was applied (TIMESTAMP_S)."""
    import pyarrow.json as pa_json

    runtime.warehouse.load_arrow(
        org, EXPORT, pa_json.read_json(io.BytesIO(ndjson_body(ROWS))), mode="replace"
    )


def test_appending_to_a_table_that_drifted_from_its_declaration_is_refused_until_replaced(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    legacy_export(runtime, "acme")
    before = runtime.warehouse.count_rows("acme", EXPORT)

    refusal = assert_error(
        upload(trigger_client, headers, "acme", EXPORT, ndjson_body(ROWS), "ndjson"),
        400,
        "table_schema_mismatch",
    )
    assert "usage_start_time" in refusal["message"] and "mode=replace" in refusal["message"]
    assert runtime.warehouse.count_rows("acme", EXPORT) == before

    assert_json(upload(trigger_client, headers, "acme", EXPORT, ndjson_body(ROWS), "ndjson", "replace"), 201)
    assert runtime.warehouse.table_schema("acme", EXPORT).fields[3].type == "TIMESTAMP"
    assert_complete(run_template(runtime, trigger_client, headers, "acme", "cost_billing", DAY))
    assert round(net_of(daily_cost(runtime, "acme")), 6) == expected_day()[2]


# -- undeclared tables ------------------------------------------------------------------------------------


def column_types(runtime: Runtime, org: str, table: str) -> dict[str, str]:
    return {f.name: f.signature() for f in runtime.warehouse.table_schema(org, table).fields}


def test_an_undeclared_table_keeps_the_types_inferred_from_the_data(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    body = b"service,cost,units,day,ok\ncompute,1.5,3,2024-05-01,true\nstorage,2.25,4,2024-05-02,false\n"

    answer = assert_json(upload(trigger_client, headers, "acme", "my_costs", body, "csv"), 201)

    assert answer["types_from"] == "inferred"
    assert column_types(runtime, "acme", "my_costs") == {
        "service": "STRING", "cost": "FLOAT64", "units": "INT64", "day": "DATE", "ok": "BOOL",
    }  # fmt: skip


def test_an_append_of_other_types_is_converted_to_the_tables_types(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_json(
        upload(
            trigger_client, headers, "acme", "my_costs", b"service,cost,day\ncompute,1.5,2024-05-01\n", "csv"
        ),
        201,
    )
    types = column_types(runtime, "acme", "my_costs")
    ndjson = b'{"service": 42, "cost": "2.5", "day": "2024-05-02"}\n{"service": "db", "cost": 3}\n'

    answer = assert_json(upload(trigger_client, headers, "acme", "my_costs", ndjson, "ndjson"), 201)

    assert (answer["rows_loaded"], answer["types_from"]) == (2, "table")
    assert column_types(runtime, "acme", "my_costs") == types
    rows = runtime.warehouse.query(f"SELECT * FROM {table_ref('acme', 'my_costs')} ORDER BY cost")
    assert rows == [
        {"service": "compute", "cost": 1.5, "day": dt.date(2024, 5, 1)},
        {"service": "42", "cost": 2.5, "day": dt.date(2024, 5, 2)},
        {"service": "db", "cost": 3.0, "day": None},
    ]


@pytest.mark.parametrize(
    "fmt,body,column,table_type,given",
    [
        ("csv", b"service,cost\nx,abc\n", "cost", "FLOAT64", "STRING"),
        ("ndjson", b'{"service": "x", "day": "soon"}\n', "day", "DATE", "STRING"),
        ("ndjson", b'{"service": {"name": "x"}}\n', "service", "STRING", "RECORD"),
    ],
)
def test_an_append_that_cannot_be_converted_is_400_naming_the_column_and_both_types(
    runtime: Runtime,
    onboard_org: Callable[[str], str],
    trigger_client: Any,
    fmt: str,
    body: bytes,
    column: str,
    table_type: str,
    given: str,
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_json(
        upload(
            trigger_client, headers, "acme", "my_costs", b"service,cost,day\ncompute,1.5,2024-05-01\n", "csv"
        ),
        201,
    )

    refusal = assert_error(
        upload(trigger_client, headers, "acme", "my_costs", body, fmt), 400, "upload_type_mismatch"
    )

    assert (refusal["column"], refusal["expected"]) == (column, table_type)
    assert column in refusal["message"] and table_type in refusal["message"] and given in refusal["message"]
    assert runtime.warehouse.count_rows("acme", "my_costs") == 1


def test_an_append_with_a_column_the_undeclared_table_lacks_is_refused(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    assert_json(
        upload(trigger_client, headers, "acme", "my_costs", b"service,cost\ncompute,1.5\n", "csv"), 201
    )

    refusal = assert_error(
        upload(trigger_client, headers, "acme", "my_costs", b"service,cost,region\nx,1,eu\n", "csv"),
        400,
        "upload_unknown_columns",
    )
    assert refusal["unknown_columns"] == ["region"]


# -- on BigQuery (bqemulator) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _bigquery_platform(
    tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: str
) -> Iterator[Platform]:
    env = {
        "CONVERGENCE_WAREHOUSE": "bigquery",
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
        "GCP_PROJECT_ID": f"uploads-{uuid.uuid4().hex[:10]}",
    }
    rt = platform_runtime(tmp_path_factory.mktemp("platform") / "home", env)
    assert isinstance(rt.warehouse, BigQueryWarehouse)
    try:
        platform = Platform(rt, tmp_path_factory.mktemp("sources"))
        platform.add_tenant("acme")
    finally:
        set_runtime(None)
    yield platform
    rt.close()


@pytest.fixture
def bigquery(_bigquery_platform: Platform, clean_environment: None) -> Iterator[Platform]:
    set_runtime(_bigquery_platform.rt)
    yield _bigquery_platform
    set_runtime(None)


def test_on_bigquery_each_format_replaces_the_export_and_cost_billing_lands_the_same_day(
    bigquery: Platform,
) -> None:
    rt, client, headers = bigquery.rt, bigquery.trigger, bigquery.keys["acme"]
    landed, daily = {}, {}
    for fmt, encode in ENCODERS.items():
        answer = assert_json(upload(client, headers, "acme", EXPORT, encode(ROWS), fmt, "replace"), 201)
        assert (answer["rows_loaded"], answer["types_from"]) == (len(ROWS), "declared")
        landed[fmt] = fingerprint(rows_of(rt, "acme", EXPORT))
        assert_complete(run_template(rt, client, headers, "acme", "cost_billing", DAY))
        daily[fmt] = daily_cost(rt, "acme")

    assert landed["csv"] == landed["ndjson"] == landed["parquet"]
    assert daily["csv"] == daily["ndjson"] == daily["parquet"]
    assert round(net_of(daily["csv"]), 6) == expected_day()[2]
    table = rt.warehouse.client.get_table(f"{rt.settings.gcp_project_id}.acme.{EXPORT}")
    assert [f.name for f in table.schema] == [f.name for f in load_schema("tenant", EXPORT).fields]
    assert {f.name: f.field_type for f in table.schema}["usage_start_time"] == "TIMESTAMP"


def test_on_bigquery_a_bad_value_is_400_and_the_table_is_unchanged(bigquery: Platform) -> None:
    rt, client, headers = bigquery.rt, bigquery.trigger, bigquery.keys["acme"]
    assert_json(upload(client, headers, "acme", EXPORT, ndjson_body(ROWS[:10]), "ndjson", "replace"), 201)
    before = fingerprint(rows_of(rt, "acme", EXPORT))

    refusal = assert_error(
        upload(client, headers, "acme", EXPORT, bad_body("csv"), "csv"), 400, "upload_type_mismatch"
    )

    assert (refusal["row"], refusal["column"], refusal["expected"]) == (3, "usage_start_time", "TIMESTAMP")
    assert fingerprint(rows_of(rt, "acme", EXPORT)) == before


def test_on_bigquery_an_append_to_an_undeclared_table_is_converted_to_its_types(bigquery: Platform) -> None:
    rt, client, headers = bigquery.rt, bigquery.trigger, bigquery.keys["acme"]
    table = f"my_costs_{uuid.uuid4().hex[:8]}"
    assert_json(
        upload(client, headers, "acme", table, b"service,cost,day\ncompute,1.5,2024-05-01\n", "csv"), 201
    )

    answer = assert_json(
        upload(client, headers, "acme", table, b'{"service": 7, "cost": "2.5"}\n', "ndjson"), 201
    )
    refusal = assert_error(upload(client, headers, "acme", table, b"service,cost\nx,abc\n", "csv"), 400)

    assert answer["types_from"] == "table"
    assert sorted(r["cost"] for r in rows_of(rt, "acme", table)) == [1.5, 2.5]
    assert (refusal["error"], refusal["column"], refusal["expected"]) == (
        "upload_type_mismatch",
        "cost",
        "FLOAT64",
    )


def test_schema_of_declared_table_reads_back_as_declared_on_both_warehouses(
    runtime: Runtime, bigquery: Platform
) -> None:
    declared = load_schema("tenant", EXPORT)
    signatures = {f.name: f.signature() for f in declared.fields}
    for wh in (runtime.warehouse, bigquery.rt.warehouse):
        wh.create_dataset("readback")
        wh.create_table("readback", declared)
        read: TableSchema = wh.table_schema("readback", EXPORT)
        assert {f.name: f.signature() for f in read.fields} == signatures


def test_an_append_to_a_table_of_a_type_uploads_cannot_fill_is_refused_naming_it(
    runtime: Runtime, onboard_org: Callable[[str], str], trigger_client: Any
) -> None:
    headers = {"X-API-Key": onboard_org("acme")}
    mapped = pa.table({"name": ["a"], "attrs": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64()))})
    sink = io.BytesIO()
    pq.write_table(mapped, sink)
    assert_json(upload(trigger_client, headers, "acme", "mapped", sink.getvalue(), "parquet"), 201)

    refusal = assert_error(
        upload(trigger_client, headers, "acme", "mapped", b"name\nb\n", "csv"), 400, "unsupported_table"
    )
    assert "attrs" in refusal["message"] and "mode=replace" in refusal["message"]
    assert runtime.warehouse.count_rows("acme", "mapped") == 1
