"""Every cost template runs from data the tenant uploaded as well as from an integration.

A tenant without an integration for a provider uploads the template's source table through
POST /api/v1/data/{org}/uploads/{table}; the template's load step keeps the period's uploaded rows and the
rest of the template runs on them, landing the same figures the integration would. With neither, the run
fails with one message naming both ways to provide the data.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.warehouse.sql import table_ref
from common.wiring import set_runtime
from convergence.demo.gcp_billing import daily_totals
from convergence.demo.provider_apis import ProviderApiServer
from tests.e2e.cost_support import (
    AI_DAY,
    AWS_MONTH,
    AWS_SAMPLE,
    AZURE_MONTH,
    AZURE_SAMPLE,
    FOCUS_MONTH,
    FOCUS_SAMPLE,
    GCP_DAYS,
    PROVIDER_API_SEED,
    Platform,
    assert_complete,
    aws_figures,
    azure_figures,
    focus_figures,
    gcp_export_rows,
    gcp_figures,
    in_month,
    on_day,
    platform_runtime,
)
from tests.e2e.support import assert_json

RAW = {
    "gcp": "gcp_billing_export_v1", "aws": "aws_cur_raw", "azure": "azure_cost_raw", "focus": "focus_raw",
    "openai": "openai_costs_raw", "anthropic": "anthropic_costs_raw",
}  # fmt: skip
PERIODS = {
    "gcp": GCP_DAYS[0].isoformat(), "aws": AWS_MONTH, "azure": AZURE_MONTH, "focus": FOCUS_MONTH,
    "openai": AI_DAY.isoformat(), "anthropic": AI_DAY.isoformat(),
}  # fmt: skip


@pytest.fixture(scope="module")
def apis() -> Iterator[ProviderApiServer]:
    with ProviderApiServer(seed=PROVIDER_API_SEED, results_per_page=6) as server:
        yield server


@pytest.fixture(scope="module")
def _platform(tmp_path_factory: pytest.TempPathFactory, apis: ProviderApiServer) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("sources").resolve()
    env = {
        "FILE_SOURCE_ROOTS": str(root),
        "OPENAI_API_BASE": apis.base_url,
        "ANTHROPIC_API_BASE": apis.base_url,
    }
    rt = platform_runtime(tmp_path_factory.mktemp("platform") / "home", env)
    try:
        yield Platform(rt, root)
    finally:
        set_runtime(None)
        rt.close()


@pytest.fixture
def platform(_platform: Platform, clean_environment: None) -> Iterator[Platform]:
    set_runtime(_platform.rt)
    yield _platform
    set_runtime(None)


def upload(platform: Platform, org: str, table: str, body: bytes, content_type: str) -> dict[str, Any]:
    response = platform.trigger.post(
        f"/api/v1/data/{org}/uploads/{table}", data=body,
        headers=platform.keys[org] | {"Content-Type": content_type},
    )  # fmt: skip
    return assert_json(response, 201)


def run(platform: Platform, org: str, template: str, date: str, **variables: Any) -> dict[str, Any]:
    response = platform.trigger.post(
        f"/api/v1/pipelines/run/{org}/{template}",
        headers=platform.keys[org],
        json={"date": date, **variables},
    )
    run_id = assert_json(response, 202)["pipeline_logging_id"]
    assert platform.rt.bus.drain(120), "the bus did not drain in time"  # type: ignore[attr-defined]
    return assert_json(
        platform.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=platform.keys[org]), 200
    )


def table_rows(platform: Platform, org: str, table: str) -> list[dict[str, Any]]:
    """Every row of a tenant table as the data route pages it out (JSON values)."""
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = assert_json(
            platform.trigger.get(
                f"/api/v1/data/{org}/tables/{table}?limit=1000&offset={offset}", headers=platform.keys[org]
            ),
            200,
        )
        rows, offset = rows + page["rows"], page["next_offset"]
    return rows


def ndjson(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()


def parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


# -- uploaded data runs every cost template --------------------------------------------------------------


def test_gcp_templates_run_from_an_uploaded_export_without_integration(platform: Platform) -> None:
    org = "up_gcp"
    platform.add_tenant(org)
    rows = gcp_export_rows(org)
    upload(platform, org, RAW["gcp"], parquet(rows), "application/vnd.apache.parquet")

    for day in GCP_DAYS:
        focus = run(platform, org, "gcp/cost/billing_focus", day.isoformat())
        assert_complete(focus)
        day_rows = sum(r["usage_start_time"].astimezone(dt.UTC).date() == day for r in rows)
        assert focus["steps"][0]["rows_processed"] == day_rows, "the step keeps the day's uploaded rows"
        expected = gcp_figures(rows, day)
        landed = platform.landed(org, "gcp", on_day(day))
        assert (landed.rows, landed.currency) == (expected.rows, expected.currency)
        assert round(landed.total, 6) == expected.total

        daily = run(platform, org, "gcp/cost/cost_billing", day.isoformat())
        assert daily["status"] == "COMPLETE", daily["error_message"]
        totals = platform.query(
            f"SELECT SUM(cost) AS cost, SUM(credits) AS credits FROM {table_ref(org, 'billing_cost_daily')}"
            " WHERE usage_date = @day",
            {"day": day},
        )[0]
        assert totals["cost"] == pytest.approx(daily_totals(rows)[day]["cost"], abs=1e-6)
        assert totals["credits"] == pytest.approx(daily_totals(rows)[day]["credits"], abs=1e-6)
    assert platform.rt.warehouse.count_rows(org, RAW["gcp"]) == len(rows), "the upload is kept as it was"


@pytest.mark.parametrize(
    ("provider", "sample", "figures"),
    [("aws", AWS_SAMPLE, aws_figures), ("azure", AZURE_SAMPLE, azure_figures)],
    ids=["aws", "azure"],
)
def test_file_provider_template_runs_from_an_uploaded_csv_without_integration(
    platform: Platform, provider: str, sample: Path, figures: Any
) -> None:
    org = f"up_{provider}"
    platform.add_tenant(org)
    upload(platform, org, RAW[provider], sample.read_bytes(), "text/csv")

    result = run(platform, org, f"{provider}/cost/{'cur_focus' if provider == 'aws' else 'export_focus'}",
                 PERIODS[provider])  # fmt: skip

    assert_complete(result)
    assert result["steps"][0]["rows_processed"] == figures().rows
    assert platform.landed(org, provider, in_month(PERIODS[provider])) == figures()


def test_focus_import_runs_from_an_uploaded_file_without_source_uri(platform: Platform) -> None:
    org = "up_focus"
    platform.add_tenant(org)
    upload(platform, org, RAW["focus"], FOCUS_SAMPLE.read_bytes(), "text/csv")

    result = run(platform, org, "focus/cost/import", FOCUS_MONTH)

    assert_complete(result)
    assert platform.landed(org, "focus", in_month(FOCUS_MONTH)) == focus_figures(FOCUS_MONTH)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_ai_cost_template_runs_from_rows_another_tenant_exported_as_ndjson(
    platform: Platform, apis: ProviderApiServer, provider: str
) -> None:
    """One tenant loads the day through the API; a second uploads that raw table and lands the same costs."""
    source, org = f"api_{provider}", f"up_{provider}"
    platform.add_tenant(source)
    platform.add_tenant(org)
    platform.integrate(source, provider, apis.keys[provider])
    assert_complete(run(platform, source, f"{provider}/cost/costs_focus", PERIODS[provider]))
    exported = table_rows(platform, source, RAW[provider])
    assert exported

    upload(platform, org, RAW[provider], ndjson(exported), "application/x-ndjson")
    result = run(platform, org, f"{provider}/cost/costs_focus", PERIODS[provider])

    assert_complete(result)
    assert result["steps"][0]["rows_processed"] == len(exported)
    expected = apis.expected_total(provider, AI_DAY)
    landed = platform.landed(org, provider)
    assert landed.rows == apis.expected_rows(provider, AI_DAY)
    assert abs(landed.total - expected) < Decimal("1e-9"), (landed.total, expected)
    assert landed == platform.landed(source, provider)


# -- neither an integration nor uploaded rows --------------------------------------------------------------


TEMPLATES = {
    "gcp": "gcp/cost/cost_billing", "aws": "aws/cost/cur_focus", "azure": "azure/cost/export_focus",
    "openai": "openai/cost/costs_focus", "anthropic": "anthropic/cost/costs_focus",
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(TEMPLATES))
def test_without_integration_or_uploaded_rows_the_run_fails_naming_both_ways(
    platform: Platform, provider: str
) -> None:
    org = f"none_{provider}"
    platform.add_tenant(org)

    result = run(platform, org, TEMPLATES[provider], PERIODS[provider])

    assert result["status"] == "FAILED"
    message = result["error_message"]
    assert f"/api/v1/integrations/{org}/{provider}/setup" in message
    assert f"/api/v1/data/{org}/uploads/{RAW[provider]}" in message
    assert result["steps"][0]["status"] == "FAILED"
    assert {s["status"] for s in result["steps"][1:-1]} == {"SKIPPED"}


def test_focus_import_without_source_uri_or_upload_names_both_ways(platform: Platform) -> None:
    org = "none_focus"
    platform.add_tenant(org)

    result = run(platform, org, "focus/cost/import", FOCUS_MONTH)

    assert result["status"] == "FAILED"
    assert "pass source_uri" in result["error_message"]
    assert f"/api/v1/data/{org}/uploads/focus_raw" in result["error_message"]


def test_uploaded_rows_of_another_day_do_not_stand_in_for_the_run_day(platform: Platform) -> None:
    org = "up_other_day"
    platform.add_tenant(org)
    rows = [r for r in gcp_export_rows(org) if r["usage_start_time"].astimezone(dt.UTC).date() == GCP_DAYS[0]]
    upload(platform, org, RAW["gcp"], parquet(rows), "application/vnd.apache.parquet")

    result = run(platform, org, "gcp/cost/billing_focus", GCP_DAYS[1].isoformat())

    assert result["status"] == "FAILED"
    assert f"gcp_billing_export_v1 holds no rows for {GCP_DAYS[1].isoformat()}" in result["error_message"]
    if platform.rt.warehouse.table_exists(org, "focus_costs"):
        assert platform.focus_rows(org, "gcp") == []


def test_an_integration_is_used_over_uploaded_rows_when_both_exist(platform: Platform) -> None:
    org = "upboth"
    platform.add_tenant(org)
    stale = [dict(r, cost=r["cost"] + 1000.0) for r in gcp_export_rows(org)]
    upload(platform, org, RAW["gcp"], parquet(stale), "application/vnd.apache.parquet")
    exported = platform.load_gcp_export(org)  # the billing export the integration names

    result = run(platform, org, "gcp/cost/billing_focus", GCP_DAYS[0].isoformat())

    assert_complete(result)
    landed = platform.landed(org, "gcp", on_day(GCP_DAYS[0]))
    assert round(landed.total, 6) == gcp_figures(exported, GCP_DAYS[0]).total


def test_a_raw_table_upload_is_read_as_the_templates_load_step_reads_files(platform: Platform) -> None:
    org = "up_raw_rules"
    platform.add_tenant(org)

    first = upload(platform, org, RAW["aws"], AWS_SAMPLE.read_bytes(), "text/csv")

    assert first["types_from"] == "template"
    columns = platform.rt.warehouse.table_schema(org, RAW["aws"]).fields
    assert {f.type for f in columns} == {"STRING"}, "every column STRING, as source.files loads it"
    names = {f.name for f in columns}
    assert {"line_item_unblended_cost", "bill_billing_period_start_date"} <= names, "AWS's snake_case rule"
    header = b"lineItem/UsageStartDate,lineItem/NotAColumnHere\n2023-11-01T00:00:00Z,x\n"
    headers = platform.keys[org] | {"Content-Type": "text/csv"}
    lacking = platform.trigger.post(f"/api/v1/data/{org}/uploads/{RAW['aws']}", data=header, headers=headers)
    assert assert_json(lacking, 400)["error"] == "missing_columns"
    assert platform.rt.warehouse.count_rows(org, RAW["aws"]) == first["rows_loaded"], "nothing written"
