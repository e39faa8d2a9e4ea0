"""The FOCUS cost templates given the wrong input: each run fails, and its error says what is wrong.

One embedded platform serves the module; each case uses a tenant of its own so a failed run's leftovers
cannot meet another case's rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.wiring import set_runtime
from tests.e2e.cost_support import (
    AI_DAY,
    AWS_MONTH,
    AWS_SAMPLE,
    AZURE_MONTH,
    GCP_DAYS,
    Platform,
    aws_figures,
    csv_rows,
    platform_runtime,
)

BAD_ROW = 17
MISSING_CUR_COLUMNS = {
    "lineItem/CurrencyCode": "line_item_currency_code",
    "bill/PayerAccountId": "bill_payer_account_id",
}


@pytest.fixture(scope="module")
def _platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("sources").resolve()
    rt = platform_runtime(tmp_path_factory.mktemp("platform") / "home", {"FILE_SOURCE_ROOTS": str(root)})
    try:
        platform = Platform(rt, root)
    finally:
        set_runtime(None)
    yield platform
    rt.close()


@pytest.fixture
def platform(_platform: Platform, clean_environment: None) -> Iterator[Platform]:
    set_runtime(_platform.rt)
    yield _platform
    set_runtime(None)


def write_cur(path: Path, *, cost: str | None = None, drop: tuple[str, ...] = ()) -> tuple[Path, str]:
    """A copy of the CUR sample with one line item's cost replaced and columns dropped; (path, its day)."""
    rows = csv_rows(AWS_SAMPLE)
    if cost is not None:
        rows[BAD_ROW]["lineItem/UnblendedCost"] = cost
    header = [c for c in rows[0] if c not in drop]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path, rows[BAD_ROW]["lineItem/UsageStartDate"][:10]


def failure(run: dict[str, Any]) -> str:
    assert run["status"] == "FAILED", run
    return run["error_message"] or ""


def test_cur_line_item_whose_unblended_cost_is_not_a_number_fails_the_run_and_keeps_the_month(
    platform: Platform,
) -> None:
    """The source check refuses the month before anything is written, so it keeps the last good run's rows."""
    platform.add_tenant("initech")
    good = platform.place("initech", "cur", AWS_SAMPLE)
    assert platform.run("initech", "aws", AWS_MONTH, source_uri=str(good))["status"] == "COMPLETE"
    before = platform.landed("initech", "aws")

    bad, _ = write_cur(platform.source_root / "initech" / "bad" / "cur.csv", cost="n/a")
    run = platform.run("initech", "aws", AWS_MONTH, source_uri=str(bad))

    message = failure(run)
    assert [s["status"] for s in run["steps"][:4]] == ["COMPLETE", "FAILED", "SKIPPED", "SKIPPED"]
    assert message == (
        "step source_quality failed: data-quality checks failed on aws_cur_raw:"
        " unblended_cost_is_a_number (expression) observed 1"
    )
    assert before == aws_figures()
    assert platform.landed("initech", "aws") == before


def test_cur_cost_of_nan_is_refused_before_the_month_is_written(platform: Platform) -> None:
    """NaN casts to a FLOAT64, so only the explicit check stops it from poisoning every later sum."""
    platform.add_tenant("wonka")
    cur, _ = write_cur(platform.source_root / "wonka" / "cur.csv", cost="NaN")
    run = platform.run("wonka", "aws", AWS_MONTH, source_uri=str(cur))

    message = failure(run)
    assert message.startswith("step source_quality failed: data-quality checks failed on aws_cur_raw:"), (
        message
    )
    assert "unblended_cost_is_a_number (expression) observed 1" in message
    results = platform.check_results("wonka", run["pipeline_logging_id"])
    assert (results["unblended_cost_is_a_number"]["status"], results["month_has_rows"]["status"]) == (
        "FAIL", "PASS",
    )  # fmt: skip
    assert (
        not platform.rt.warehouse.table_exists("wonka", "focus_costs")
        or platform.landed("wonka", "aws").rows == 0
    )


def test_cur_file_missing_required_columns_fails_the_run_naming_them(platform: Platform) -> None:
    platform.add_tenant("hooli")

    cur, _ = write_cur(platform.source_root / "hooli" / "cur.csv", drop=tuple(MISSING_CUR_COLUMNS))
    run = platform.run("hooli", "aws", AWS_MONTH, source_uri=str(cur))

    message = failure(run)
    assert (
        message
        == f"step load failed: {cur} lacks required columns: line_item_currency_code, bill_payer_account_id"
    )
    assert [s["status"] for s in run["steps"]] == ["FAILED", "SKIPPED", "SKIPPED", "SKIPPED", "COMPLETE"]
    assert not platform.rt.warehouse.table_exists("hooli", "focus_costs")


def test_aws_run_for_a_month_the_cur_does_not_hold_fails_month_has_rows(platform: Platform) -> None:
    platform.add_tenant("vandelay")
    cur = platform.place("vandelay", "cur", AWS_SAMPLE)

    run = platform.run("vandelay", "aws", "2023-12-15", source_uri=str(cur / AWS_SAMPLE.name))

    message = failure(run)
    assert (
        message
        == "step source_quality failed: data-quality checks failed on aws_cur_raw: month_has_rows (row_count) observed 0"
    )
    assert (
        platform.check_results("vandelay", run["pipeline_logging_id"])["month_has_rows"]["status"] == "FAIL"
    )


RAW_TABLES = {
    "aws": "aws_cur_raw", "azure": "azure_cost_raw", "gcp": "gcp_billing_export_v1",
    "openai": "openai_costs_raw", "anthropic": "anthropic_costs_raw",
}  # fmt: skip


@pytest.mark.parametrize(
    ("provider", "date"),
    [("aws", AWS_MONTH), ("azure", AZURE_MONTH), ("gcp", GCP_DAYS[0].isoformat()),
     ("openai", AI_DAY.isoformat()), ("anthropic", AI_DAY.isoformat())],
)  # fmt: skip
def test_run_without_integration_or_uploaded_rows_fails_naming_both_ways_to_provide_them(
    platform: Platform, provider: str, date: str
) -> None:
    org = f"no_{provider}"
    platform.add_tenant(org)

    run = platform.run(org, provider, date)

    message = failure(run)
    table = RAW_TABLES[provider]
    assert f"{org} has no {provider} integration and {table} holds no rows for " in message
    assert f"set up the {provider} integration (POST /api/v1/integrations/{org}/{provider}/setup)" in message
    assert f"upload the data (POST /api/v1/data/{org}/uploads/{table})" in message
    assert run["steps"][0]["status"] == "FAILED"
    assert {s["status"] for s in run["steps"][1:-1]} == {"SKIPPED"}
