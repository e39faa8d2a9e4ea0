"""Run the FinOps Foundation's focus-validator on a FOCUS dataset file and read its verdict.

focus-validator needs Python >= 3.12 and pins libraries that clash with ours, so it lives in its own virtual
environment (scripts/install-focus-validator.sh) and runs as a program. It reads
`focus_validator/rules/currency_codes.csv` relative to its working directory, so each run gets a private
working directory holding the shipped ISO 4217 list; `--block-download` keeps it off the network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import ConfigurationError, DependencyUnavailable
from common.settings import CONFIGS_DIR, get_settings

REPO_ROOT = CONFIGS_DIR.parent
CURRENCY_CODES = CONFIGS_DIR / "reference" / "currency_codes.csv"
SUMMARY = re.compile(r"Total: (\d+) \| Pass: (\d+) \| Fail: (\d+) \| Skipped: (\d+)")
FAILURE = re.compile(
    r"^- (?P<rule>[A-Za-z]+-[A-Z]-\d{3}-[A-Z]): violations=(?P<violations>\d+); (?P<message>.*)$"
)

# Rules focus-validator 2.2.1 cannot get right, with the reason; every other failure is a real one.
KNOWN_VALIDATOR_ERRORS = {
    "InvoiceId-C-005-C": (
        "applied to every row although the rule holds only for charges on an issued or provisional invoice; the"
        " validator applies its opposite, InvoiceId-C-004-C (InvoiceId MUST be null when there is no invoice),"
        " to every row as well, so any dataset fails one of the two. Convergence leaves InvoiceId null where the"
        " source names no invoice (GCP standard export, OpenAI, Anthropic, the samples' CUR and Azure rows)."
    ),
}


@dataclass
class ValidationReport:
    """What the validator said: rule counts, the failed rules (id → message) and its whole output."""

    total: int
    passed: int
    failed: int
    skipped: int
    failures: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def unexplained_failures(self) -> dict[str, str]:
        """Failed rules other than the validator's own known errors."""
        return {rule: text for rule, text in self.failures.items() if rule not in KNOWN_VALIDATOR_ERRORS}


def validator_program() -> Path:
    """The focus-validator executable: FOCUS_VALIDATOR_BIN, else the project's .venv-focus."""
    configured = get_settings().focus_validator_bin
    program = Path(configured) if configured else REPO_ROOT / ".venv-focus" / "bin" / "focus-validator"
    if not program.is_file():
        raise ConfigurationError(
            f"focus-validator is not installed at {program}: run scripts/install-focus-validator.sh"
            " (or set FOCUS_VALIDATOR_BIN)"
        )
    return program


def parse_report(output: str) -> ValidationReport:
    """Read the summary line and the failures section of focus-validator's console output."""
    summary = SUMMARY.search(output)
    if summary is None:
        tail = output.strip().splitlines()[-1:] or ["no output"]
        raise DependencyUnavailable(f"focus-validator printed no summary: {tail[0][:300]}")
    total, passed, failed, skipped = (int(g) for g in summary.groups())
    failures: dict[str, str] = {}
    section = output.split("--- Failures ---", 1)[1] if "--- Failures ---" in output else ""
    for line in section.splitlines():
        match = FAILURE.match(line.strip())
        if match:
            failures[match["rule"]] = f"violations={match['violations']}; {match['message']}"
    return ValidationReport(total, passed, failed, skipped, failures, output)


def validate_focus_file(data_file: Path, *, version: str = "1.2", timeout: float = 600) -> ValidationReport:
    """Validate one CSV or Parquet FOCUS file against the FOCUS `version` rules, offline."""
    program = validator_program()
    with tempfile.TemporaryDirectory(prefix="focus-validator-") as workdir:
        rules = Path(workdir) / "focus_validator" / "rules"
        rules.mkdir(parents=True)
        shutil.copyfile(CURRENCY_CODES, rules / "currency_codes.csv")
        completed = subprocess.run(
            [str(program), "--data-file", str(Path(data_file).resolve()), "--block-download",
             "--validate-version", version, "--show-violations"],
            cwd=workdir, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    return parse_report(completed.stdout + completed.stderr)
