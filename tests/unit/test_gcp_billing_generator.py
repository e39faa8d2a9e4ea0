"""Tests for the deterministic GCP standard billing export generator."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import pytest

from convergence.demo.gcp_billing import daily_totals, generate_billing_export

SCHEMA_PATH = (
    Path(__file__).resolve().parents[2] / "configs" / "schemas" / "tenant" / "gcp_billing_export_v1.json"
)
START = datetime.date(2024, 2, 27)  # crosses a leap day and a month boundary
DAYS = 4
COST_TYPES = {"regular", "tax", "adjustment", "rounding_error"}


def _is_float(value: object) -> bool:
    return isinstance(value, float)


_TYPE_CHECKS = {
    "STRING": lambda v: isinstance(v, str),
    "INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "FLOAT": _is_float,
    "BOOLEAN": lambda v: isinstance(v, bool),
    "TIMESTAMP": lambda v: isinstance(v, datetime.datetime) and v.utcoffset() == datetime.timedelta(0),
    "DATE": lambda v: isinstance(v, datetime.date) and not isinstance(v, datetime.datetime),
    "RECORD": lambda v: isinstance(v, dict),
}


def _check(record: dict, fields: list[dict], path: str = "") -> list[str]:
    """Return schema violations of *record* against BigQuery JSON schema *fields*."""
    errors = []
    by_name = {f["name"]: f for f in fields}
    for extra in set(record) - set(by_name):
        errors.append(f"{path}{extra}: not in schema")
    for name, field in by_name.items():
        where = f"{path}{name}"
        mode = field.get("mode", "NULLABLE")
        if name not in record:
            errors.append(f"{where}: missing")
            continue
        value = record[name]
        if mode == "REPEATED":
            if not isinstance(value, list):
                errors.append(f"{where}: REPEATED must be a list, got {type(value).__name__}")
                continue
            items = value
        elif value is None:
            if mode == "REQUIRED":
                errors.append(f"{where}: REQUIRED but None")
            continue
        else:
            items = [value]
        for i, item in enumerate(items):
            item_path = f"{where}[{i}]" if mode == "REPEATED" else where
            if not _TYPE_CHECKS[field["type"]](item):
                errors.append(f"{item_path}: expected {field['type']}, got {type(item).__name__}")
            elif field["type"] == "RECORD":
                errors.extend(_check(item, field["fields"], item_path + "."))
    return errors


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_billing_export("acme-corp", START, DAYS, seed=7)


def _day(row: dict) -> datetime.date:
    return row["usage_start_time"].astimezone(datetime.UTC).date()


def test_schema_file_is_well_formed(schema: dict) -> None:
    assert schema["timePartitioning"] == {"type": "DAY", "field": "usage_start_time"}
    assert schema["clustering"] == {"fields": ["billing_account_id"]}

    def walk(fields: list[dict]) -> None:
        names = [f["name"] for f in fields]
        assert len(names) == len(set(names))
        for f in fields:
            assert f["type"] in _TYPE_CHECKS and f["mode"] in {"NULLABLE", "REQUIRED", "REPEATED"}
            assert f["description"]
            assert ("fields" in f) == (f["type"] == "RECORD")
            if "fields" in f:
                walk(f["fields"])

    walk(schema["fields"])
    top = [f["name"] for f in schema["fields"]]
    assert "resource" not in top  # detailed export only
    for name in ("billing_account_id", "cost", "credits", "cost_type", "adjustment_info", "cost_at_list"):
        assert name in top


def test_checker_detects_violations(schema: dict, rows: list[dict]) -> None:
    row = dict(rows[0], cost="1.0", bogus=1, credits={})
    del row["currency"]
    errors = _check(row, schema["fields"])
    assert any(e.startswith("cost:") for e in errors)
    assert any(e.startswith("bogus:") for e in errors)
    assert any(e.startswith("credits:") for e in errors)
    assert any(e.startswith("currency:") for e in errors)


def test_every_row_matches_schema(schema: dict, rows: list[dict]) -> None:
    assert rows
    for row in rows:
        assert _check(row, schema["fields"]) == [], row


def test_deterministic_for_same_arguments(rows: list[dict]) -> None:
    assert generate_billing_export("acme-corp", START, DAYS, seed=7) == rows


def test_overlapping_windows_agree(rows: list[dict]) -> None:
    later = generate_billing_export("acme-corp", START + datetime.timedelta(days=1), 2, seed=7)
    assert later == [r for r in rows if _day(r) in {START + datetime.timedelta(days=d) for d in (1, 2)}]


def test_different_tenant_or_seed_gives_different_rows(rows: list[dict]) -> None:
    other = generate_billing_export("globex", START, DAYS, seed=7)
    assert other != rows
    assert {r["billing_account_id"] for r in other}.isdisjoint({r["billing_account_id"] for r in rows})
    assert {r["project"]["id"] for r in other}.isdisjoint({r["project"]["id"] for r in rows})
    assert generate_billing_export("acme-corp", START, DAYS, seed=8) != rows


def test_tenant_has_one_billing_account_and_several_labelled_projects(rows: list[dict]) -> None:
    assert len({r["billing_account_id"] for r in rows}) == 1
    projects = {r["project"]["id"]: r["project"] for r in rows}
    assert len(projects) >= 3
    for project in projects.values():
        assert {lb["key"] for lb in project["labels"]} >= {"env", "team"}
        assert project["ancestors"][0]["resource_name"] == f"projects/{project['number']}"


def test_row_count_and_all_cost_types_each_day(rows: list[dict]) -> None:
    for offset in range(DAYS):
        day = START + datetime.timedelta(days=offset)
        day_rows = [r for r in rows if _day(r) == day]
        assert len(day_rows) == 40 + 3
        assert {r["cost_type"] for r in day_rows} == COST_TYPES
    assert {_day(r) for r in rows} == {START + datetime.timedelta(days=d) for d in range(DAYS)}


def test_rows_on_both_sides_of_utc_midnight(rows: list[dict]) -> None:
    for offset in range(DAYS):
        day = START + datetime.timedelta(days=offset)
        midnight = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.UTC)
        starts = {r["usage_start_time"] for r in rows if _day(r) == day}
        assert midnight in starts
        assert midnight + datetime.timedelta(hours=23) in starts
        assert all(midnight <= s < midnight + datetime.timedelta(days=1) for s in starts)


def test_timestamps_invoice_and_currency(rows: list[dict]) -> None:
    for row in rows:
        start, end = row["usage_start_time"], row["usage_end_time"]
        assert start.tzinfo is datetime.UTC and (start.minute, start.second, start.microsecond) == (0, 0, 0)
        assert end - start == datetime.timedelta(hours=1)
        assert datetime.timedelta(hours=1) <= row["export_time"] - end <= datetime.timedelta(hours=12)
        assert row["invoice"]["month"] == start.strftime("%Y%m")
        assert row["currency"] == "USD" and row["currency_conversion_rate"] == 1.0
        assert row["cost"] == round(row["cost"], 6)
    assert {r["invoice"]["month"] for r in rows} == {"202402", "202403"}


def test_cost_types_have_expected_shape(rows: list[dict]) -> None:
    for row in rows:
        info = row["adjustment_info"]
        if row["cost_type"] == "adjustment":
            assert info["id"] and info["description"] and info["mode"] and info["type"]
        else:
            assert info == {"id": None, "description": None, "mode": None, "type": None}
        if row["cost_type"] == "regular":
            assert row["cost"] > 0 and row["cost_at_list"] >= row["cost"]
            assert row["usage"]["amount"] > 0 and row["usage"]["amount_in_pricing_units"] > 0
        if row["cost_type"] == "rounding_error":
            assert 0.000001 <= abs(row["cost"]) <= 0.01
        if row["cost_type"] == "tax":
            assert row["cost"] > 0


def test_realistic_services_and_skus(rows: list[dict]) -> None:
    many = rows + generate_billing_export("initech", START, 10, seed=1)
    services = {r["service"]["description"]: r["service"]["id"] for r in many}
    assert services["Compute Engine"] == "6F81-5844-456A"
    assert services["Cloud Storage"] == "95FF-2EF5-5EA1"
    assert services["BigQuery"] == "24E6-581D-38E5"
    assert {"Cloud Run", "Cloud SQL", "Networking", "Vertex AI", "Kubernetes Engine"} <= set(services)
    core = next(r for r in many if r["sku"]["description"] == "N2 Instance Core running in Americas")
    assert (core["usage"]["unit"], core["usage"]["pricing_unit"]) == ("seconds", "hour")
    assert math.isclose(
        core["usage"]["amount"], core["usage"]["amount_in_pricing_units"] * 3600, rel_tol=1e-9
    )
    assert {lb["key"] for lb in core["system_labels"]} >= {"compute.googleapis.com/machine_spec"}
    gcs = next(r for r in many if r["sku"]["description"] == "Standard Storage US Multi-region")
    assert (gcs["usage"]["unit"], gcs["usage"]["pricing_unit"]) == ("byte-seconds", "gibibyte month")
    bq = next(r for r in many if r["sku"]["description"] == "Analysis")
    assert (bq["usage"]["unit"], bq["usage"]["pricing_unit"]) == ("bytes", "tebibyte")
    credit_types = {c["type"] for r in many for c in r["credits"]}
    assert credit_types == {"SUSTAINED_USAGE_DISCOUNT", "COMMITTED_USAGE_DISCOUNT", "FREE_TIER", "PROMOTION"}


def test_credits_are_negative_and_never_exceed_cost(rows: list[dict]) -> None:
    many = rows + generate_billing_export("initech", START, 10, seed=1)
    assert any(r["credits"] for r in many)
    for row in many:
        amounts = [c["amount"] for c in row["credits"]]
        assert all(a < 0 for a in amounts)
        assert all(a == round(a, 6) for a in amounts)
        assert abs(math.fsum(amounts)) <= abs(row["cost"]) + 1e-9
        if amounts:
            assert row["cost_type"] == "regular" and row["cost"] > 0


def test_daily_totals_matches_hand_computation(rows: list[dict]) -> None:
    expected: dict[datetime.date, dict[str, float]] = {}
    for row in rows:
        bucket = expected.setdefault(_day(row), {"cost": 0.0, "credits": 0.0})
        bucket["cost"] += row["cost"]
        for credit in row["credits"]:
            bucket["credits"] += credit["amount"]
    totals = daily_totals(rows)
    assert list(totals) == sorted(expected)
    for day, bucket in expected.items():
        assert totals[day]["cost"] == pytest.approx(bucket["cost"], abs=1e-6)
        assert totals[day]["credits"] == pytest.approx(bucket["credits"], abs=1e-6)


def test_daily_totals_uses_utc_day_of_usage_start_time() -> None:
    tz = datetime.timezone(datetime.timedelta(hours=-5))
    rows = [
        {
            "usage_start_time": datetime.datetime(2024, 3, 1, 23, tzinfo=datetime.UTC),
            "cost": 1.5,
            "credits": [{"amount": -0.5}],
        },
        # 2024-03-01 20:00 at UTC-5 is 2024-03-02 01:00 UTC.
        {"usage_start_time": datetime.datetime(2024, 3, 1, 20, tzinfo=tz), "cost": 2.25, "credits": []},
        {
            "usage_start_time": datetime.datetime(2024, 3, 2, 0, tzinfo=datetime.UTC),
            "cost": 0.25,
            "credits": [{"amount": -0.1}, {"amount": -0.05}],
        },
    ]
    assert daily_totals(rows) == {
        datetime.date(2024, 3, 1): {"cost": 1.5, "credits": -0.5},
        datetime.date(2024, 3, 2): {"cost": 2.5, "credits": -0.15},
    }


def test_invalid_arguments() -> None:
    assert generate_billing_export("acme-corp", START, 0) == []
    with pytest.raises(ValueError):
        generate_billing_export("acme-corp", START, -1)
    with pytest.raises(ValueError):
        generate_billing_export("acme-corp", START, 1, rows_per_day=1)
