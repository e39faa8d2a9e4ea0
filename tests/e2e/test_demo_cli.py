"""`convergence demo` and `convergence --help` as a user runs them: a subprocess on a fresh machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from common.settings import Settings

CONVERGENCE = Path(sys.executable).with_name("convergence")
RUNS_COMPLETE = re.compile(r"(?P<done>\d+)/(?P<total>\d+) runs COMPLETE")


def fresh_environment(home: Path) -> dict[str, str]:
    """This process's environment with no Convergence setting at all except a private home."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    return env | {"CONVERGENCE_HOME": str(home), "COLUMNS": "250"}


def convergence(*args: str, home: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONVERGENCE), *args], check=False, env=fresh_environment(home), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def assert_demo_succeeded(result: subprocess.CompletedProcess) -> str:
    output = result.stdout
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{output[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    summary = RUNS_COMPLETE.search(output)
    assert summary, output[-2000:]
    assert int(summary["total"]) > 0 and summary["done"] == summary["total"], summary.group(0)
    for tenant in ("acme_demo", "globex_demo"):
        verdicts = [line for line in output.splitlines() if line.startswith(f"{tenant}:") and "→" in line]
        assert len(verdicts) == 1 and verdicts[0].rstrip().endswith("reconciled"), verdicts
        assert "NOT" not in verdicts[0]
    assert "NOT reconciled" not in output
    return output


def test_demo_on_a_fresh_home_completes_every_run_and_reconciles_both_tenants(tmp_path: Path):
    home = tmp_path / "fresh-home"

    first = assert_demo_succeeded(convergence("demo", home=home))
    assert "Root key (shown once" in first
    assert (home / "root_key").is_file()

    second = assert_demo_succeeded(convergence("demo", home=home))
    assert "Root key (shown once" not in second, "the second demo must reuse the kept root key"
    assert RUNS_COMPLETE.search(second)["total"] == RUNS_COMPLETE.search(first)["total"]


def test_help_lists_every_command(tmp_path: Path):
    result = convergence("--help", home=tmp_path / "home", timeout=30)

    assert result.returncode == 0, result.stderr
    commands = set(re.findall(r"^\W*(\w+)\s{2,}\S", result.stdout, flags=re.MULTILINE))
    assert {"serve", "demo"} <= commands, result.stdout
