"""The FOCUS cost templates end to end on the embedded platform (DuckDB, local bus): every provider's
template runs through the API and the bus into one tenant's focus_costs, and what lands is held against the
source's own figures computed here from the files, the export generator and the replay server.

One platform serves the module: acme loads every provider, globex loads AWS and GCP (to prove a tenant's
reruns never touch another tenant). Tests that re-run a period leave the same totals behind them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from common.warehouse.sql import table_ref
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
    CHARGE_FREQUENCIES,
    FOCUS_MONTH,
    FOCUS_NEXT_MONTH,
    FOCUS_SAMPLE,
    FOCUS_UNIT,
    GCP_DAYS,
    PROVIDER_API_SEED,
    Figures,
    Platform,
    assert_complete,
    aws_figures,
    azure_figures,
    fingerprint,
    focus_figures,
    focus_rule_breaks,
    focus_sample_rows,
    gcp_figures,
    in_month,
    on_day,
    platform_runtime,
    step_rows,
)
from tests.e2e.support import assert_error, assert_json

WARNINGS = (
    "source_contracted_cost_present",
    "source_service_subcategory_present",
    "source_charge_frequency_values",
    "source_invoice_issuer_is_provider",
    "source_pricing_unit_format",
    "source_one_category_per_service",
)


@pytest.fixture(scope="module")
def apis() -> Iterator[ProviderApiServer]:
    with ProviderApiServer(seed=PROVIDER_API_SEED, results_per_page=6) as server:
        yield server


@pytest.fixture(scope="module")
def _loaded(tmp_path_factory: pytest.TempPathFactory, apis: ProviderApiServer) -> Iterator[SimpleNamespace]:
    """acme with every provider's period loaded, globex with AWS and GCP; each run as the API shows it."""
    root = tmp_path_factory.mktemp("sources").resolve()
    env = {
        "FILE_SOURCE_ROOTS": str(root),
        "OPENAI_API_BASE": apis.base_url,
        "ANTHROPIC_API_BASE": apis.base_url,
        "HTTP_BACKOFF_SECONDS": "0.01",
    }
    rt = platform_runtime(tmp_path_factory.mktemp("platform") / "home", env)
    try:
        platform = Platform(rt, root)
        runs: dict[tuple[str, str, str], dict[str, Any]] = {}
        exports: dict[str, list[dict[str, Any]]] = {}
        for org in ("acme", "globex"):
            platform.add_tenant(org)
            cur = platform.place(org, "cur/2023-11", AWS_SAMPLE, "cur-00001.csv")
            platform.integrate(org, "aws", AWS_ROLE, {"cur_location": str(cur.parent)})
            exports[org] = platform.load_gcp_export(org)
            runs[org, "aws", AWS_MONTH] = platform.run(org, "aws", AWS_MONTH)
            for day in GCP_DAYS:
                runs[org, "gcp", day.isoformat()] = platform.run(org, "gcp", day.isoformat())
        azure = platform.place("acme", "azure/exports", AZURE_SAMPLE)
        platform.integrate("acme", "azure", AZURE_PRINCIPAL, {"export_location": str(azure)})
        runs["acme", "azure", AZURE_MONTH] = platform.run("acme", "azure", AZURE_MONTH)
        focus = platform.place("acme", "focus", FOCUS_SAMPLE) / FOCUS_SAMPLE.name
        for month in (FOCUS_MONTH, FOCUS_NEXT_MONTH):
            runs["acme", "focus", month] = platform.run("acme", "focus", month, source_uri=str(focus))
        for provider in ("openai", "anthropic"):
            platform.integrate("acme", provider, apis.keys[provider])
            runs["acme", provider, AI_DAY.isoformat()] = platform.run("acme", provider, AI_DAY.isoformat())
    finally:
        set_runtime(None)
    yield SimpleNamespace(platform=platform, runs=runs, exports=exports, focus_uri=str(focus))
    rt.close()


@pytest.fixture
def loaded(_loaded: SimpleNamespace, clean_environment: None) -> Iterator[SimpleNamespace]:
    """The module's platform, installed as the runtime the functions use during this test."""
    set_runtime(_loaded.platform.rt)
    yield _loaded
    set_runtime(None)


# -- 1. each template lands the source's own totals -------------------------------------------------------


def test_aws_cur_month_completes_with_1281_rows_totalling_1_6823086974_usd(loaded: SimpleNamespace) -> None:
    expected = aws_figures()
    assert expected == Figures(1281, Decimal("1.6823086974"), "USD")

    run = loaded.runs["acme", "aws", AWS_MONTH]
    assert_complete(run)
    assert step_rows(run) == {"load": 1281, "focus": 1281}
    assert loaded.platform.landed("acme", "aws", in_month(AWS_MONTH)) == expected
    assert loaded.platform.landed("acme", "aws") == expected


def test_azure_ea_month_completes_with_27_rows_totalling_1_26136926505726_cad(
    loaded: SimpleNamespace,
) -> None:
    expected = azure_figures()
    assert expected == Figures(27, Decimal("1.26136926505726"), "CAD")

    run = loaded.runs["acme", "azure", AZURE_MONTH]
    assert_complete(run)
    assert step_rows(run) == {"load": 27, "focus": 27}
    assert loaded.platform.landed("acme", "azure") == expected


def test_focus_import_lands_999_september_rows_of_20_28022672899_usd_and_the_october_row_in_its_own_run(
    loaded: SimpleNamespace,
) -> None:
    september, october = focus_figures(FOCUS_MONTH), focus_figures(FOCUS_NEXT_MONTH)
    assert september == Figures(999, Decimal("20.28022672899"), "USD")
    assert october == Figures(1, Decimal("0.24"), "USD")

    for month, rows in ((FOCUS_MONTH, 999), (FOCUS_NEXT_MONTH, 1)):
        assert_complete(loaded.runs["acme", "focus", month])
        assert step_rows(loaded.runs["acme", "focus", month]) == {"load": 1000, "focus": rows}
    assert loaded.platform.landed("acme", "focus", in_month(FOCUS_MONTH)) == september
    assert loaded.platform.landed("acme", "focus", in_month(FOCUS_NEXT_MONTH)) == october
    october_rows = [r for r in loaded.platform.focus_rows("acme", "focus") if in_month(FOCUS_NEXT_MONTH)(r)]
    assert [r["ProviderName"] for r in october_rows] == ["Oracle"]
    assert (
        october_rows[0]["x_PipelineRunId"]
        == loaded.runs["acme", "focus", FOCUS_NEXT_MONTH]["pipeline_logging_id"]
    )


@pytest.mark.parametrize("day", GCP_DAYS, ids=str)
def test_gcp_export_day_completes_with_cost_plus_credits_of_that_day(
    loaded: SimpleNamespace, day: dt.date
) -> None:
    expected = gcp_figures(loaded.exports["acme"], day)

    assert_complete(loaded.runs["acme", "gcp", day.isoformat()])
    landed = loaded.platform.landed("acme", "gcp", on_day(day))
    assert (landed.rows, landed.currency) == (expected.rows, expected.currency)
    # The generator rounds its daily sums to 6 decimals, the precision of its amounts.
    assert round(landed.total, 6) == expected.total


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_ai_provider_day_completes_with_the_apis_own_total(
    loaded: SimpleNamespace, apis: ProviderApiServer, provider: str
) -> None:
    expected = (apis.expected_rows(provider, AI_DAY), apis.expected_total(provider, AI_DAY))

    assert_complete(loaded.runs["acme", provider, AI_DAY.isoformat()])
    landed = loaded.platform.landed("acme", provider)
    assert (landed.rows, landed.currency) == (expected[0], "USD")
    # Anthropic's amounts are cents, divided by 100 in FLOAT64: exact to far below a cent.
    assert abs(landed.total - expected[1]) < Decimal("1e-9"), (landed.total, expected[1])


# -- 2. a rerun replaces that provider's period only ------------------------------------------------------


RERUNS = [
    ("aws", AWS_MONTH),
    ("azure", AZURE_MONTH),
    ("focus", FOCUS_MONTH),
    ("gcp", GCP_DAYS[1].isoformat()),
    ("openai", AI_DAY.isoformat()),
    ("anthropic", AI_DAY.isoformat()),
]


@pytest.mark.parametrize(("provider", "date"), RERUNS, ids=[r[0] for r in RERUNS])
def test_rerunning_a_period_replaces_that_providers_rows_and_nothing_else(
    loaded: SimpleNamespace, provider: str, date: str
) -> None:
    platform: Platform = loaded.platform
    variables = {"source_uri": loaded.focus_uri} if provider == "focus" else {}
    table = table_ref("acme", "focus_costs")
    everything = platform.query(f"SELECT * FROM {table}")
    others_before = fingerprint(r for r in everything if r["x_Source"] != provider)
    globex_before = fingerprint(platform.query(f"SELECT * FROM {table_ref('globex', 'focus_costs')}"))
    period = in_month(date) if provider in ("aws", "azure", "focus") else on_day(dt.date.fromisoformat(date))
    before = platform.landed("acme", provider, period)
    untouched_periods = fingerprint(r for r in everything if r["x_Source"] == provider and not period(r))

    run = platform.run("acme", provider, date, **variables)

    assert_complete(run)
    after = platform.query(f"SELECT * FROM {table}")
    assert platform.landed("acme", provider, period) == before
    period_rows = [r for r in after if r["x_Source"] == provider and period(r)]
    assert {r["x_PipelineRunId"] for r in period_rows} == {run["pipeline_logging_id"]}
    assert fingerprint(r for r in after if r["x_Source"] == provider and not period(r)) == untouched_periods
    assert fingerprint(r for r in after if r["x_Source"] != provider) == others_before
    assert fingerprint(platform.query(f"SELECT * FROM {table_ref('globex', 'focus_costs')}")) == globex_before


def test_every_provider_lands_in_one_focus_costs_table_labelled_by_its_source(
    loaded: SimpleNamespace,
) -> None:
    counts = loaded.platform.query(
        f"SELECT x_Source AS source, ProviderName AS provider, COUNT(*) AS n FROM {table_ref('acme', 'focus_costs')}"
        " GROUP BY x_Source, ProviderName ORDER BY x_Source, ProviderName"
    )
    sources = {r["source"] for r in counts}
    assert sources == {"aws", "azure", "focus", "gcp", "openai", "anthropic"}
    providers = {r["source"]: r["provider"] for r in counts if r["source"] != "focus"}
    assert providers == {
        "aws": "AWS", "azure": "Microsoft", "gcp": "Google Cloud", "openai": "OpenAI", "anthropic": "Anthropic",
    }  # fmt: skip


# -- 4. the FOCUS import reports the file's rule breaks and repairs them ----------------------------------


def test_focus_import_reports_the_files_rule_breaks_as_warnings_and_completes(
    loaded: SimpleNamespace,
) -> None:
    run = loaded.runs["acme", "focus", FOCUS_MONTH]
    breaks = focus_rule_breaks(FOCUS_MONTH)
    assert all(breaks[name] > 0 for name in WARNINGS), breaks

    assert_complete(run)
    results = loaded.platform.check_results("acme", run["pipeline_logging_id"])
    reported = {
        name: (results[name]["severity"], results[name]["status"], results[name]["failed_rows"])
        for name in WARNINGS
    }
    assert reported == {name: ("warn", "FAIL", breaks[name]) for name in WARNINGS}
    errors = [r for r in results.values() if r["severity"] == "error"]
    assert errors and all(r["status"] == "PASS" for r in errors), errors


def test_focus_import_repairs_the_rows_it_writes(loaded: SimpleNamespace) -> None:
    rows = [r for r in loaded.platform.focus_rows("acme", "focus") if in_month(FOCUS_MONTH)(r)]
    assert len(rows) == len(focus_sample_rows(FOCUS_MONTH)) == 999

    assert all(r["ContractedCost"] is not None for r in rows)
    assert {r["ChargeFrequency"] for r in rows} <= set(CHARGE_FREQUENCIES)
    categories: dict[str, set[str]] = {}
    for row in rows:
        categories.setdefault(row["ServiceName"], set()).add(row["ServiceCategory"])
    assert all(len(values) == 1 for values in categories.values()), categories
    assert all(r["ServiceSubcategory"] for r in rows)
    bad_units = {
        r["PricingUnit"] for r in rows if r["PricingUnit"] and not FOCUS_UNIT.match(r["PricingUnit"])
    }
    assert not bad_units, bad_units
    assert all(r["InvoiceIssuerName"] == r["ProviderName"] for r in rows if r["ProviderName"] == "AWS")


# -- 6. tenants never read each other's costs -------------------------------------------------------------


def test_a_tenant_cannot_read_another_tenants_focus_costs_through_the_data_routes(
    loaded: SimpleNamespace,
) -> None:
    platform: Platform = loaded.platform
    acme, globex = platform.keys["acme"], platform.keys["globex"]

    for path in ("/api/v1/data/globex/tables/focus_costs", "/api/v1/data/globex/tables"):
        response = platform.trigger.get(path, headers=acme)
        assert_error(response, 403)
        assert "BilledCost" not in response.get_data(as_text=True)
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = platform.trigger.get(
            f"/api/v1/data/globex/tables/focus_costs?limit=1000&offset={offset}", headers=globex
        )
        body = assert_json(page, 200)
        rows, offset = rows + body["rows"], body["next_offset"]
    assert len(rows) == platform.rt.warehouse.count_rows("globex", "focus_costs")
    assert {r["x_Source"] for r in rows} == {"aws", "gcp"}
    acme_runs = {run["pipeline_logging_id"] for (org, *_), run in loaded.runs.items() if org == "acme"}
    assert {r["x_PipelineRunId"] for r in rows}.isdisjoint(acme_runs)
