"""`convergence demo` and `convergence --help` as a user runs them: a subprocess on a fresh machine.

The demo's printed figures are checked against totals this test computes itself from the same sources:
the vendored AWS and Azure samples (csv module), the seeded GCP export generator and the replayed
OpenAI and Anthropic cost APIs, for the days the demo's runs table says it ran.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

from common.settings import Settings
from convergence.demo.gcp_billing import daily_totals, generate_billing_export
from convergence.demo.provider_apis import ProviderApiServer

CONVERGENCE = Path(sys.executable).with_name("convergence")
RUNS_COMPLETE = re.compile(r"(?P<done>\d+)/(?P<total>\d+) runs COMPLETE")
SAMPLES = Path(__file__).resolve().parents[2] / "convergence" / "demo" / "samples"
TENANTS = ("acme_demo", "globex_demo")
PIPELINES = {
    "acme_demo": {
        "gcp-cost-billing_focus": 3,
        "gcp-cost-cost_billing": 3,
        "openai-cost-costs_focus": 3,
        "anthropic-cost-costs_focus": 3,
    },
    "globex_demo": {"aws-cost-cur_focus": 1, "azure-cost-export_focus": 1},
}
PROVIDERS = {"acme_demo": {"Google Cloud", "OpenAI", "Anthropic"}, "globex_demo": {"AWS", "Microsoft"}}
GCP_SEED = 2026  # the seed the demo generates its Google Cloud export with


def fresh_environment(home: Path) -> dict[str, str]:
    """This process's environment with no Convergence setting at all except a private home."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    return env | {"CONVERGENCE_HOME": str(home), "COLUMNS": "250"}


def convergence(*args: str, home: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CONVERGENCE), *args],
        check=False,
        env=fresh_environment(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def table_rows(output: str) -> list[tuple[str | None, list[str]]]:
    """(tenant whose table it is, cells) of every body row of the printed tables."""
    rows, tenant = [], None
    for line in output.splitlines():
        titled = [t for t in TENANTS if f"{t}: cost by" in line and not line.startswith(t + ": FOCUS")]
        if titled:
            tenant = titled[0]
        if line.startswith("│"):
            rows.append((tenant, [cell.strip() for cell in line.strip().strip("│").split("│")]))
    return rows


def runs(output: str) -> list[list[str]]:
    """Rows of the runs table: tenant, pipeline, date, status, ms, rows, error."""
    return [
        cells for _, cells in table_rows(output) if len(cells) == 7 and cells[1].startswith(cells[0] + "-")
    ]


def provider_costs(output: str) -> dict[str, dict[tuple[str, str], tuple[float, float, str]]]:
    """tenant → (provider, currency) → (FOCUS cost, source total, match) of the cost-by-provider tables."""
    found: dict[str, dict] = defaultdict(dict)
    for tenant, cells in table_rows(output):
        if len(cells) == 5 and cells[4] in ("yes", "NO"):
            focus, source = (float(text.replace(",", "")) for text in cells[2:4])
            found[tenant][(cells[0], cells[1])] = (focus, source, cells[4])
    return found


def currency_totals(output: str, tenant: str) -> dict[str, str]:
    """currency → the printed total of the tenant's cost-by-service table (one row per currency)."""
    return {
        cells[1]: cells[2]
        for t, cells in table_rows(output)
        if t == tenant and len(cells) == 3 and cells[0].startswith("total ")
    }


def sample_total(name: str, amount: str, currency: str) -> dict[str, float]:
    sums: dict[str, Decimal] = defaultdict(Decimal)
    with gzip.open(SAMPLES / name, "rt", newline="", encoding="utf-8-sig") as stream:
        for row in csv.DictReader(stream):
            sums[row[currency]] += Decimal(row[amount] or "0")
    return {code: float(total) for code, total in sums.items()}


def acme_source_totals(days: list[dt.date]) -> dict[tuple[str, str], float]:
    """What Google Cloud, OpenAI and Anthropic bill acme_demo for `days` (consecutive), from their sources."""
    replay = ProviderApiServer()  # not started: its expected totals are computed from its seed alone
    export = daily_totals(generate_billing_export("acme_demo", days[0], len(days), seed=GCP_SEED))
    return {
        ("Google Cloud", "USD"): math.fsum(day["cost"] + day["credits"] for day in export.values()),
        ("OpenAI", "USD"): float(sum(replay.expected_total("openai", day) for day in days)),
        ("Anthropic", "USD"): float(sum(replay.expected_total("anthropic", day) for day in days)),
    }


def assert_demo_succeeded(result: subprocess.CompletedProcess) -> str:
    output = result.stdout
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{output[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    summary = RUNS_COMPLETE.search(output)
    assert summary, output[-2000:]
    assert int(summary["total"]) > 0 and summary["done"] == summary["total"], summary.group(0)
    for tenant in TENANTS:
        verdicts = [line for line in output.splitlines() if line.startswith(f"{tenant}:") and "→" in line]
        assert len(verdicts) == 1 and verdicts[0].rstrip().endswith("reconciled"), verdicts
        assert "NOT" not in verdicts[0]
    assert "NOT reconciled" not in output
    return output


def assert_every_provider_ran_and_matches_its_source(output: str) -> None:
    table = runs(output)
    assert len(table) == int(RUNS_COMPLETE.search(output)["total"]) == 14, table
    assert {row[3] for row in table} == {"COMPLETE"}
    for tenant, expected in PIPELINES.items():
        ran = Counter(row[1].removeprefix(f"{tenant}-") for row in table if row[0] == tenant)
        assert ran == expected, ran
    assert all(int(row[5]) > 0 for row in table), "every run wrote rows"
    assert {row[2] for row in table if row[0] == "globex_demo"} == {"2023-11-15", "2023-09-15"}
    acme_days = sorted({dt.date.fromisoformat(row[2]) for row in table if row[0] == "acme_demo"})
    assert len(acme_days) == 3

    costs = provider_costs(output)
    assert {provider for provider, _ in costs["acme_demo"]} == PROVIDERS["acme_demo"]
    assert {provider for provider, _ in costs["globex_demo"]} == PROVIDERS["globex_demo"]
    sources = acme_source_totals(acme_days) | {
        ("AWS", "USD"): sample_total(
            "aws_cur_legacy_2023_11.csv.gz", "lineItem/UnblendedCost", "lineItem/CurrencyCode"
        )["USD"],
        ("Microsoft", "CAD"): sample_total(
            "azure_ea_export_2023_09.csv.gz", "CostInBillingCurrency", "BillingCurrencyCode"
        )["CAD"],
    }
    printed = costs["acme_demo"] | costs["globex_demo"]
    assert printed.keys() == sources.keys()
    for key, (focus, source, match) in printed.items():
        assert match == "yes", key
        assert math.isclose(focus, sources[key], abs_tol=5e-7), (key, focus, sources[key])
        assert math.isclose(source, sources[key], abs_tol=5e-7), (key, source, sources[key])
    assert "(OpenAI and Anthropic answered by a local replay server)" in output


def test_demo_on_a_fresh_home_runs_every_provider_and_reconciles_both_tenants(tmp_path: Path):
    home = tmp_path / "fresh-home"

    first = assert_demo_succeeded(convergence("demo", home=home))
    assert "Root key (shown once" in first
    assert (home / "root_key").is_file()
    assert_every_provider_ran_and_matches_its_source(first)
    assert (home / "sources" / "globex_demo" / "aws" / "cur" / "aws_cur_legacy_2023_11.csv.gz").is_file()

    second = assert_demo_succeeded(convergence("demo", home=home))
    assert "Root key (shown once" not in second, "the second demo must reuse the kept root key"
    assert "already onboarded; API key rotated" in second
    assert_every_provider_ran_and_matches_its_source(second)
    assert provider_costs(second) == provider_costs(first), "a re-run replaces its data, never adds to it"


def test_demo_reports_usd_and_cad_costs_separately_and_never_their_sum(tmp_path: Path):
    output = assert_demo_succeeded(convergence("demo", "--days", "1", home=tmp_path / "home"))

    usd = sample_total("aws_cur_legacy_2023_11.csv.gz", "lineItem/UnblendedCost", "lineItem/CurrencyCode")[
        "USD"
    ]
    cad = sample_total("azure_ea_export_2023_09.csv.gz", "CostInBillingCurrency", "BillingCurrencyCode")[
        "CAD"
    ]
    assert currency_totals(output, "globex_demo") == {"USD": f"{usd:,.2f}", "CAD": f"{cad:,.2f}"}
    globex_section = output[output.index("globex_demo: cost by provider") :]
    for mixed in {f"{usd + cad:,.2f}", f"{usd + cad:,.6f}"}:
        assert mixed not in globex_section, f"USD and CAD were added together: {mixed}"
    total_line = next(line for line in output.splitlines() if line.startswith("globex_demo total"))
    assert f"{cad:,.2f} CAD" in total_line and f"{usd:,.2f} USD" in total_line and "not added" in total_line
    assert len(runs(output)) == 4 + 2, (
        "one day per acme_demo pipeline with --days 1, one month per globex_demo one"
    )


def test_help_lists_every_command(tmp_path: Path):
    result = convergence("--help", home=tmp_path / "home", timeout=30)

    assert result.returncode == 0, result.stderr
    commands = set(re.findall(r"^\W*(\w+)\s{2,}\S", result.stdout, flags=re.MULTILINE))
    assert {"serve", "demo"} <= commands, result.stdout
