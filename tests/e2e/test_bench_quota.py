"""`python -m bench quota` runs the demo's pipelines on bqemulator and prints each daily figure beside its
quota; with --json it writes them as {name: {value, unit, baseline, ratio}}. Figures are not asserted here
(benchmarks print, tests do not time): this proves the benchmark runs from a clean checkout and ends what
it starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, SETTINGS_VARIABLES

FIGURES = {
    "load_jobs_per_day", "shared_table_modifications_per_day", "tenant_table_modifications_per_day",
    "shared_mutating_dml_per_day", "concurrent_queries", "storage_write_bytes_per_second",
    "storage_write_connections", "kms_requests_per_minute", "pubsub_publish_bytes_per_second",
    "claim_writes_per_second", "bigquery_cost_per_tenant_month",
}  # fmt: skip


def test_bench_quota_prints_every_figure_beside_its_quota_and_writes_them(tmp_path: Path) -> None:
    out = tmp_path / "quota.json"
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "quota", "--tenants", "1000", "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1,000 tenants x 6 daily pipelines" in done.stdout
    figures = json.loads(out.read_text())
    assert set(figures) == FIGURES
    for name, figure in figures.items():
        assert set(figure) == {"value", "unit", "baseline", "ratio"}, name
        assert figure["value"] >= 0, name
        if figure["baseline"] is not None:
            assert figure["ratio"] == figure["value"] / figure["baseline"], name
    assert figures["load_jobs_per_day"]["value"] > 0
