"""cloudbuild.yaml: named steps in the right order, parallel deploys, declared substitutions, and
deployments that match both Terraform's functions and the entry points the sources decorate."""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

CLOUDBUILD = REPO / "cloudbuild.yaml"
DEPLOYS = ["deploy-onboard", "deploy-trigger", "deploy-step-execute"]
# Cloud Build's built-in substitutions (https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values).
BUILT_INS = {
    "PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME", "COMMIT_SHA", "SHORT_SHA",
    "REVISION_ID", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME", "REF_NAME", "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT",
}  # fmt: skip
# A `$` Cloud Build reads: `$$` is a literal dollar; anything else must name a substitution.
DOLLAR = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)|\$")


@pytest.fixture(scope="module")
def build() -> dict[str, Any]:
    return yaml.safe_load(CLOUDBUILD.read_text())


@pytest.fixture(scope="module")
def steps(build: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in build["steps"]}


def script(step: dict[str, Any]) -> str:
    return "\n".join(str(arg) for arg in step.get("args", []))


def strings(node: Any) -> list[str]:
    """Every string value of a parsed YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def decorated_entry_points() -> dict[str, tuple[str, str]]:
    """{entry point: (source folder, "http" | "cloudevent")} from the decorators of functions/*/main.py."""
    found = {}
    for main in sorted((REPO / "functions").glob("*/main.py")):
        for node in ast.parse(main.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Attribute) and decorator.attr in ("http", "cloud_event"):
                        found[node.name] = (
                            main.parent.name,
                            "http" if decorator.attr == "http" else "cloudevent",
                        )
    return found


def terraform_functions() -> dict[str, dict[str, str]]:
    """The deployments of terraform/main.tf `locals.functions`: {key: {source, entry_point, signature_type}}."""
    text = (REPO / "terraform" / "main.tf").read_text()
    start = re.search(r"^\s*functions\s*=\s*\{", text, re.MULTILINE)
    assert start, "terraform/main.tf has no locals.functions map"
    depth, end = 0, start.end() - 1
    for end in range(start.end() - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    block = text[start.end() : end]
    entries = re.findall(
        r"(\w+)\s*=\s*\{\s*source\s*=\s*\"(\w+)\"\s*entry_point\s*=\s*\"(\w+)\"\s*signature_type\s*=\s*\"(\w+)\"",
        block,
    )
    assert entries, "no deployment parsed from terraform/main.tf locals.functions"
    return {key: {"source": s, "entry_point": e, "signature_type": t} for key, s, e, t in entries}


def targets(step: dict[str, Any]) -> list[str]:
    return re.findall(r"-target='module\.function\[\"(\w+)\"\]'", script(step))


def test_cloudbuild_parses_and_every_step_has_a_unique_id(build: dict[str, Any]) -> None:
    ids = [step.get("id") for step in build["steps"]]
    assert all(ids) and len(ids) == len(set(ids)), ids
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def test_steps_run_tests_then_stage_then_the_three_deploys(build: dict[str, Any]) -> None:
    ids = [step["id"] for step in build["steps"]]
    assert ids[:5] == ["tests", "stage", *DEPLOYS]
    assert set(ids[5:]) <= {"apply-all", "smoke"}


def test_tests_start_at_once_stage_waits_for_them_and_the_deploys_wait_only_for_stage(steps) -> None:
    assert "waitFor" not in steps["tests"]
    assert steps["stage"]["waitFor"] == ["tests"]
    for deploy in DEPLOYS:
        assert steps[deploy]["waitFor"] == ["stage"], (
            f"{deploy} must start with its siblings, right after stage"
        )
    assert steps["apply-all"]["waitFor"] == DEPLOYS
    assert steps["smoke"]["waitFor"] == ["apply-all"]


def test_tests_step_runs_the_readme_test_command_verbatim(steps) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.DOTALL).group(1).strip()
    assert command in script(steps["tests"]).splitlines()[-1]


def test_stage_step_stages_every_function_with_the_tested_venv(steps) -> None:
    assert ".venv/bin/convergence stage --out build" in script(steps["stage"])
    assert steps["stage"]["name"] == steps["tests"]["name"], "same image, so the tests' .venv runs here"


def test_every_substitution_used_is_declared_and_every_declared_one_is_used(build: dict[str, Any]) -> None:
    declared = set(build["substitutions"])
    used: set[str] = set()
    for text in strings({key: value for key, value in build.items()}):
        for match in DOLLAR.finditer(text):
            if match.group(0) == "$$":
                continue
            name = match.group(1) if match.group(1) is not None else match.group(2)
            assert name, f"a bare $ in {text!r}: write $$ for a literal dollar"
            assert name.startswith("_") or name in BUILT_INS, (
                f"${name} is neither a substitution nor built-in"
            )
            if name.startswith("_"):
                used.add(name)
    assert used <= declared, f"used but not declared: {sorted(used - declared)}"
    assert declared <= used, f"declared but never used: {sorted(declared - used)}"
    assert all(name.startswith("_") for name in declared)


def test_deploys_target_every_terraform_function_from_its_own_source(steps) -> None:
    deployments = terraform_functions()
    covered: list[str] = []
    for deploy in DEPLOYS:
        source = deploy.removeprefix("deploy-").replace("-", "_")
        keys = targets(steps[deploy])
        assert keys, f"{deploy} targets no function"
        for key in keys:
            assert deployments[key]["source"] == source, f"{deploy} deploys {key}, built from another source"
        covered += keys
    assert sorted(covered) == sorted(deployments), "every deployment has exactly one deploy step"
    assert not targets(steps["apply-all"]), "apply-all converges everything"


def test_deployed_entry_points_are_the_decorated_functions_of_their_sources(steps) -> None:
    decorated = decorated_entry_points()
    deployments = terraform_functions()
    for key, deployment in deployments.items():
        assert deployment["entry_point"] in decorated, f"{key}: no decorated {deployment['entry_point']}"
        assert decorated[deployment["entry_point"]] == (deployment["source"], deployment["signature_type"])

    checked = dict(
        re.findall(r"^\s*check \$\{_NAME_PREFIX\}-([a-z-]+) (\w+)", script(steps["smoke"]), re.MULTILINE)
    )
    expected = {key.replace("_", "-"): d["entry_point"] for key, d in deployments.items()}
    assert checked == expected, "smoke checks each deployment's entry point"
    assert all(entry in decorated for entry in checked.values())


def test_terraform_variables_passed_by_the_deploys_exist(steps) -> None:
    declared = set(
        re.findall(r'^variable "(\w+)"', (REPO / "terraform" / "variables.tf").read_text(), re.MULTILINE)
    )
    for deploy in [*DEPLOYS, "apply-all"]:
        passed = re.findall(r'-var="(\w+)=', script(steps[deploy]))
        assert passed and set(passed) <= declared, (deploy, set(passed) - declared)
        assert "-lock-timeout=" in script(steps[deploy]), "parallel applies wait for the state lock"


def test_staged_sources_are_where_terraform_archives_them() -> None:
    main = (REPO / "terraform" / "main.tf").read_text()
    # The deploy steps apply copies of terraform/ made beside it, so `../build` is the stage step's output.
    assert re.search(r'build_dir\s*=\s*"\$\{path\.module\}/\.\./build"', main)
    assert re.search(r'source_dir\s*=\s*"\$\{local\.build_dir\}/\$\{each\.value\.source\}"', main)
