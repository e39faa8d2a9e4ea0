"""The FOCUS cost templates on the BigQuery adapter (bqemulator): the same runs as on DuckDB, through the
API and the bus, landing the same totals. The SQL is written once, in GoogleSQL; here it runs as written.

One platform in a project of its own on the session's emulator serves the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from common.warehouse.bigquery import BigQueryWarehouse
from common.wiring import set_runtime
from convergence.demo.provider_apis import ProviderApiServer
from tests.e2e.cost_support import (
    AI_DAY,
    AWS_MONTH,
    AWS_ROLE,
    AWS_SAMPLE,
    AZURE_MONTH,
    AZURE_PRINCIPAL,
    AZURE_SAMPLE,
    FOCUS_MONTH,
    FOCUS_NEXT_MONTH,
    FOCUS_SAMPLE,
    GCP_DAYS,
    PROVIDER_API_SEED,
    Platform,
    assert_complete,
    aws_figures,
    azure_figures,
    focus_figures,
    gcp_figures,
    in_month,
    on_day,
    platform_runtime,
)


@pytest.fixture(scope="module")
def apis() -> Iterator[ProviderApiServer]:
    with ProviderApiServer(seed=PROVIDER_API_SEED) as server:
        yield server


@pytest.fixture(scope="module")
def _loaded(
    tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: str, apis: ProviderApiServer
) -> Iterator[SimpleNamespace]:
    """acme on the BigQuery adapter with every provider's period loaded; each run as the API shows it."""
    root = tmp_path_factory.mktemp("sources").resolve()
    env = {
        "CONVERGENCE_WAREHOUSE": "bigquery",
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
        "GCP_PROJECT_ID": f"focus-{uuid.uuid4().hex[:10]}",
        "FILE_SOURCE_ROOTS": str(root),
        "OPENAI_API_BASE": apis.base_url,
        "ANTHROPIC_API_BASE": apis.base_url,
        "HTTP_BACKOFF_SECONDS": "0.01",
    }
    rt = platform_runtime(tmp_path_factory.mktemp("platform") / "home", env)
    assert isinstance(rt.warehouse, BigQueryWarehouse)
    try:
        platform = Platform(rt, root)
        platform.add_tenant("acme")
        runs: dict[tuple[str, str], dict[str, Any]] = {}
        cur = platform.place("acme", "cur/2023-11", AWS_SAMPLE)
        platform.integrate("acme", "aws", AWS_ROLE, {"cur_location": str(cur.parent)})
        runs["aws", AWS_MONTH] = platform.run("acme", "aws", AWS_MONTH)
        azure = platform.place("acme", "azure", AZURE_SAMPLE)
        platform.integrate("acme", "azure", AZURE_PRINCIPAL, {"export_location": str(azure)})
        runs["azure", AZURE_MONTH] = platform.run("acme", "azure", AZURE_MONTH)
        focus = platform.place("acme", "focus", FOCUS_SAMPLE) / FOCUS_SAMPLE.name
        for month in (FOCUS_MONTH, FOCUS_NEXT_MONTH):
            runs["focus", month] = platform.run("acme", "focus", month, source_uri=str(focus))
        export = platform.load_gcp_export("acme")
        runs["gcp", GCP_DAYS[0].isoformat()] = platform.run("acme", "gcp", GCP_DAYS[0].isoformat())
        for provider in ("openai", "anthropic"):
            platform.integrate("acme", provider, apis.keys[provider])
            runs[provider, AI_DAY.isoformat()] = platform.run("acme", provider, AI_DAY.isoformat())
    finally:
        set_runtime(None)
    yield SimpleNamespace(platform=platform, runs=runs, export=export)
    rt.close()


@pytest.fixture
def loaded(_loaded: SimpleNamespace, clean_environment: None) -> Iterator[SimpleNamespace]:
    set_runtime(_loaded.platform.rt)
    yield _loaded
    set_runtime(None)


def test_aws_cur_month_on_bigquery_lands_1281_rows_totalling_1_6823086974_usd(
    loaded: SimpleNamespace,
) -> None:
    assert_complete(loaded.runs["aws", AWS_MONTH])
    assert loaded.platform.landed("acme", "aws") == aws_figures()


def test_azure_ea_month_on_bigquery_lands_27_rows_totalling_its_cad_cost(loaded: SimpleNamespace) -> None:
    assert_complete(loaded.runs["azure", AZURE_MONTH])
    assert loaded.platform.landed("acme", "azure") == azure_figures()


def test_focus_import_on_bigquery_lands_each_month_with_its_own_run(loaded: SimpleNamespace) -> None:
    for month in (FOCUS_MONTH, FOCUS_NEXT_MONTH):
        assert_complete(loaded.runs["focus", month])
        assert loaded.platform.landed("acme", "focus", in_month(month)) == focus_figures(month)


def test_gcp_export_day_on_bigquery_lands_cost_plus_credits(loaded: SimpleNamespace) -> None:
    day = GCP_DAYS[0]
    expected = gcp_figures(loaded.export, day)

    assert_complete(loaded.runs["gcp", day.isoformat()])
    landed = loaded.platform.landed("acme", "gcp", on_day(day))
    assert (landed.rows, landed.currency, round(landed.total, 6)) == (
        expected.rows, expected.currency, expected.total,
    )  # fmt: skip


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_ai_provider_day_on_bigquery_lands_the_apis_own_total(
    loaded: SimpleNamespace, apis: ProviderApiServer, provider: str
) -> None:
    assert_complete(loaded.runs[provider, AI_DAY.isoformat()])
    landed = loaded.platform.landed("acme", provider)
    assert landed.rows == apis.expected_rows(provider, AI_DAY)
    assert abs(landed.total - apis.expected_total(provider, AI_DAY)) < Decimal("1e-9")


def test_rerunning_the_aws_month_on_bigquery_replaces_it_and_keeps_the_others(
    loaded: SimpleNamespace,
) -> None:
    platform: Platform = loaded.platform
    others = {source: platform.landed("acme", source) for source in ("azure", "focus", "gcp", "openai")}

    run = platform.run("acme", "aws", AWS_MONTH)

    assert_complete(run)
    assert platform.landed("acme", "aws") == aws_figures()
    assert {r["x_PipelineRunId"] for r in platform.focus_rows("acme", "aws")} == {run["pipeline_logging_id"]}
    assert {source: platform.landed("acme", source) for source in others} == others


def test_aws_run_on_bigquery_for_a_month_the_cur_does_not_hold_fails_month_has_rows(
    loaded: SimpleNamespace,
) -> None:
    platform: Platform = loaded.platform
    before = platform.landed("acme", "aws")

    run = platform.run("acme", "aws", "2023-12-15")

    assert run["status"] == "FAILED"
    assert run["error_message"] == (
        "step source_quality failed: data-quality checks failed on aws_cur_raw: month_has_rows (row_count) observed 0"
    )
    assert platform.landed("acme", "aws") == before
