"""`convergence templates list|show|check` over the shipped configs/, and over a planted broken template."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from common.settings import CONFIGS_DIR
from common.templates import loader
from convergence.cli import app


def templates(*args: str):
    return CliRunner().invoke(app, ["templates", *args], env={"COLUMNS": "200"})


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the shipped templates and setup pipelines the loader reads instead of configs/."""
    root = tmp_path / "configs"
    for folder in CONFIGS_DIR.iterdir():
        if folder.is_dir() and folder.name not in ("schemas", "reference"):
            shutil.copytree(folder, root / folder.name)
    monkeypatch.setattr(loader, "CONFIGS_DIR", root)
    yield root


def test_check_reports_every_shipped_template_ok_and_exits_0() -> None:
    result = templates("check")

    assert result.exit_code == 0, result.output
    shipped = [name for name, _ in loader.shipped_pipelines()]
    assert "gcp/cost/cost_billing" in shipped and "setup/onboarding" in shipped
    for name in shipped:
        assert f"OK   {name}" in result.output
    assert f"{len(shipped)} of {len(shipped)} templates load" in result.output


def test_check_names_the_template_step_and_field_of_a_bad_step_and_exits_1(configs: Path) -> None:
    path = configs / "gcp" / "cost" / "cost_billing.yml"
    template = yaml.safe_load(path.read_text())
    steps = {step["step_id"]: step for step in template["steps"]}
    del steps["daily_cost"]["destination"]["table"]
    steps["quality"]["checks"][0]["min"] = "lots"
    path.write_text(yaml.safe_dump(template, sort_keys=False))

    result = templates("check")

    assert result.exit_code == 1, result.output
    assert "FAIL gcp/cost/cost_billing" in result.output
    assert "step daily_cost: destination.table: Field required" in result.output
    assert "step quality: checks[0].min: Input should be a valid integer" in result.output
    assert "OK   gcp/example/dryrun" in result.output
    assert "1 invalid" in result.output

    report = json.loads(templates("check", "--json", "gcp/cost/cost_billing").output)
    assert report["invalid"] == 1
    (entry,) = report["templates"]
    assert [(p["step_id"], p["field"]) for p in entry["problems"]] == [
        ("daily_cost", "destination.table"), ("quality", "checks[0].min"),
    ]  # fmt: skip


def test_check_refuses_a_template_folder_that_is_no_registered_provider(configs: Path) -> None:
    shutil.copytree(configs / "gcp" / "example", configs / "unknowncloud" / "example")

    result = templates("check")

    assert result.exit_code == 1
    assert "configs/unknowncloud is not a provider of common/providers/registry.py" in result.output


def test_list_and_show_describe_the_templates() -> None:
    listed = {t["template"]: t for t in json.loads(templates("list", "--json").output)["templates"]}
    assert listed["gcp/example/dryrun"]["ok"] is True
    assert listed["gcp/example/dryrun"]["description"].startswith("Dry run")

    shown = templates("show", "gcp/cost/cost_billing")
    assert shown.exit_code == 0, shown.output
    assert "step daily_cost [gcp.bq_etl]" in shown.output
    assert "variable min_rows (int, overridable)" in shown.output

    unknown = templates("show", "gcp/cost/no_such")
    assert unknown.exit_code == 2 and "no shipped template gcp/cost/no_such" in unknown.output
