"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) are all kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_import_follows_the_layers_and_no_module_cycles() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " kept, 0 broken." in result.stdout, result.stdout[-2000:]


def test_a_function_module_is_a_handful_of_lines_through_the_composition_root() -> None:
    for main in sorted((REPO / "functions").glob("*/main.py")):
        source = main.read_text()
        imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
        allowed = ("import functions_framework", "from common import wiring")
        assert imports and all(line in allowed or line.startswith("from common.wiring import") for line in imports), (
            main,
            imports,
        )
        assert len(source.splitlines()) <= 25, main
