"""`convergence stage`: each staged folder is a whole Cloud Function on its own.

A staged function is loaded the way Cloud Functions loads it: functions-framework imports `main.py` from
the folder, with only the folder and the installed third-party packages on `sys.path`. The probe runs in a
subprocess of the venv's Python with `-I -S`: no PYTHONPATH, no current directory, and no `.pth` files, so
the repository's editable install (a `.pth` finder) cannot lend it `common/` from the working tree.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from typer.testing import CliRunner

from convergence.cli.stage import stage_command
from convergence.packaging import (
    FUNCTIONS,
    StagingError,
    content_hash,
    runtime_requirements,
    stage_functions,
)
from tests.conftest import REPO, ROOT_KEY

PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
SITE_DIRS = list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))

# Runs inside the isolated interpreter: load one staged function with functions-framework, send it
# requests, report statuses and bodies, and where `common` and every loaded module came from.
PROBE = r"""
import json, os, sys
plan = json.loads(sys.argv[1])
sys.path[:0] = [plan["folder"]]
sys.path.extend(plan["site_dirs"])
import functions_framework
import logging

logged = []
class Remember(logging.Handler):
    def emit(self, record):
        logged.append(f"{record.levelname} {record.name}: {record.getMessage()}")
logging.getLogger("common").addHandler(Remember(logging.INFO))
logging.getLogger("common").setLevel(logging.INFO)

results = []
for call in plan["calls"]:
    if call.get("bootstrap"):
        from common.contracts.onboarding import BootstrapRequest
        from common.wiring import get_runtime
        from common.services.onboarding import bootstrap
        results.append(bootstrap(get_runtime(), BootstrapRequest()))
        continue
    client = functions_framework.create_app(call["target"], "main.py", call["signature"]).test_client()
    response = client.open(call["path"], method=call["method"], headers=call.get("headers") or {},
                           data=call.get("body"))
    results.append({"status": response.status_code, "json": response.get_json(silent=True)})

import common
loaded = {name: getattr(module, "__file__", None) or "" for name, module in list(sys.modules.items())}
print(json.dumps({
    "results": results,
    "logged": logged,
    "common_file": common.__file__,
    "from_working_tree": sorted(n for n, f in loaded.items() if f.startswith(tuple(plan["sources"]))),
    "editable_finders": sorted(n for n in loaded if n.startswith("__editable__")),
}))
"""


@pytest.fixture(scope="module")
def pins() -> list[str]:
    return runtime_requirements()


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, pins: list[str]) -> Path:
    out = tmp_path_factory.mktemp("build")
    stage_functions(out, requirements=pins)
    return out


def run_staged(folder: Path, home: Path, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Run PROBE on one staged folder in an isolated interpreter with a clean environment."""
    plan = {
        "folder": str(folder),
        "site_dirs": SITE_DIRS,
        "calls": calls,
        "sources": [f"{REPO / part}{os.sep}" for part in ("common", "functions", "configs")],
    }
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "CONVERGENCE_HOME": str(home),
           "CA_ROOT_API_KEY": ROOT_KEY}  # fmt: skip
    completed = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, json.dumps(plan)],
        cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(report["common_file"]).is_relative_to(folder), report["common_file"]
    assert report["from_working_tree"] == [], "modules leaked in from the working tree"
    assert report["editable_finders"] == []
    return report


def push_envelope(data: bytes, attributes: dict[str, str], topic: str) -> dict[str, Any]:
    return {
        "message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "7",
                    "publishTime": "2024-05-02T06:00:00.000Z"},
        "subscription": f"projects/local-project/subscriptions/{topic}-push",
    }  # fmt: skip


def raw_push_call(target: str, data: bytes, attributes: dict[str, str], topic: str) -> dict[str, Any]:
    """A POST of the bare push envelope: what terraform's push subscriptions send (no CloudEvent headers)."""
    return {"target": target, "signature": "cloudevent", "method": "POST", "path": f"/projects/p/topics/{topic}",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(push_envelope(data, attributes, topic))}  # fmt: skip


def push_call(target: str, data: bytes, attributes: dict[str, str], topic: str) -> dict[str, Any]:
    """A POST of a structured CloudEvent carrying one Pub/Sub push message (cloudevents.to_structured)."""
    envelope = push_envelope(data, attributes, topic)
    event = CloudEvent(
        {"type": PUBSUB_EVENT_TYPE, "source": f"//pubsub.googleapis.com/projects/local-project/topics/{topic}",
         "id": "7", "datacontenttype": "application/json"},
        envelope,
    )  # fmt: skip
    headers, body = to_structured(event)
    return {"target": target, "signature": "cloudevent", "method": "POST", "path": "/",
            "headers": headers, "body": body.decode()}  # fmt: skip


def http_call(
    target: str, method: str, path: str, body: Any = None, headers: dict | None = None
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return {"target": target, "signature": "http", "method": method, "path": path, "headers": headers,
            "body": None if body is None else json.dumps(body)}  # fmt: skip


ROOT = {"X-CA-Root-Key": ROOT_KEY}
STEP_FOR_MISSING_RUN = json.dumps(
    {"schema": "convergence.step/v1", "run_id": "no_such_run", "tenant_id": "ghost_org", "step_index": 0}
).encode()
SCHEDULE_EVERY_TENANT = json.dumps(
    {"schema": "convergence.schedule/v1", "template": "gcp/example/dryrun", "tenants": "*"}
).encode()


# --- the staged folder -------------------------------------------------------------------------------


def test_each_function_is_staged_with_main_common_configs_and_requirements(build: Path) -> None:
    for name in FUNCTIONS:
        folder = build / name
        assert sorted(p.name for p in folder.iterdir()) == [
            "common",
            "configs",
            "main.py",
            "requirements.txt",
        ]
        assert (folder / "main.py").read_bytes() == (REPO / "functions" / name / "main.py").read_bytes()
        assert (folder / "configs" / "setup" / "bootstrap.yml").is_file()
        assert (folder / "common" / "settings.py").is_file()


def sources(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_staged_common_is_the_whole_library_with_no_tooling_or_caches(build: Path) -> None:
    folder = build / "trigger"
    assert sources(folder / "common") == sources(REPO / "common"), "common/ is staged whole, no exclusion list"
    assert not (folder / "convergence").exists()
    assert not list(folder.rglob("__pycache__")) and not list(folder.rglob("*.pyc"))


def test_requirements_pin_the_runtime_closure_and_no_test_tools(build: Path) -> None:
    lines = (build / "step_execute" / "requirements.txt").read_text().splitlines()
    assert lines and all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*==[A-Za-z0-9.+!-]+", line) for line in lines), (
        lines
    )
    names = [line.split("==")[0] for line in lines]
    assert names == sorted(names) and len(names) == len(set(names))
    for needed in (
        "google-cloud-bigquery",
        "google-cloud-bigquery-storage",
        "google-cloud-pubsub",
        "google-cloud-kms",
        "functions-framework",
        "tink",
        "duckdb",
        "pydantic",
        "grpcio-status",
        "httpx",
        "google-cloud-storage",
    ):  # fmt: skip  (grpcio-status: google-api-core[grpc]; httpx: the provider cost APIs)
        assert needed in names, needed
    for test_only in ("pytest", "pytest-timeout", "aiosmtpd", "gcp-storage-emulator", "ruff", "convergence",
                      "typer", "rich", "google-cloud-scheduler"):  # fmt: skip  (the CLI's own dependencies)
        assert test_only not in names, test_only
    assert all(
        (build / name / "requirements.txt").read_text() == "\n".join(lines) + "\n" for name in FUNCTIONS
    )


def test_staging_twice_gives_the_same_hash_and_an_edit_changes_it(tmp_path: Path, pins: list[str]) -> None:
    first = stage_functions(tmp_path / "a", ["onboard"], requirements=pins)[0]
    second = stage_functions(tmp_path / "b", ["onboard"], requirements=pins)[0]
    assert (first.files, first.sha256) == (second.files, second.sha256)
    assert first.sha256 != stage_functions(tmp_path / "c", ["trigger"], requirements=pins)[0].sha256
    mtimes = {p.stat().st_mtime for p in (tmp_path / "a" / "onboard").rglob("*")}
    assert mtimes == {946684800.0}, "fixed modification times keep the zip archive byte-identical"

    (tmp_path / "b" / "onboard" / "configs" / "plans.yml").write_text("edited: true\n")
    assert content_hash(tmp_path / "b" / "onboard")[1] != first.sha256


def test_staging_again_replaces_the_old_folder(tmp_path: Path, pins: list[str]) -> None:
    stage_functions(tmp_path, ["onboard"], requirements=pins)
    stray = tmp_path / "onboard" / "common" / "removed_since.py"
    stray.write_text("x = 1\n")
    staged = stage_functions(tmp_path, ["onboard"], requirements=pins)[0]
    assert not stray.exists()
    assert staged.files == content_hash(tmp_path / "onboard")[0]


def test_a_staged_module_importing_the_tooling_package_fails_staging(tmp_path: Path, pins: list[str]) -> None:
    source = tmp_path / "src"
    for part in ("common", "configs", "functions"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "common" / "services" / "late.py").write_text(
        "def seed():\n    from convergence.demo.gcp_billing import generate\n    return generate\n"
    )
    with pytest.raises(StagingError, match=r"common/services/late.py uses convergence\.demo"):
        stage_functions(tmp_path / "out", ["onboard"], source_root=source, requirements=pins)
    assert (
        not (tmp_path / "out" / "onboard").exists() and not (tmp_path / "out" / ".onboard.staging").exists()
    )


def test_staging_refuses_to_delete_sources() -> None:
    with pytest.raises(StagingError, match="refusing"):
        stage_functions(REPO / "functions", ["onboard"], requirements=[])


def test_stage_command_prints_one_line_per_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    app = typer.Typer()
    app.command("stage")(stage_command)
    app.command("noop")(lambda: None)  # a second command keeps `stage` a sub-command, as in convergence/cli/__init__.py
    result = CliRunner().invoke(app, ["stage", "--out", str(tmp_path), "--function", "step_execute"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert re.fullmatch(r"step_execute: \d+ files, sha256 [0-9a-f]{64}, .*step_execute", line), line
    assert line.split("sha256 ")[1].split(",")[0] == content_hash(tmp_path / "step_execute")[1]

    bad = CliRunner().invoke(app, ["stage", "--out", str(tmp_path), "--function", "nope"])
    assert bad.exit_code == 2 and "unknown function nope" in bad.output


# --- each staged function, alone, as Cloud Functions runs it -----------------------------------------


def test_staged_onboard_answers_health_and_bootstraps_from_its_own_configs(
    build: Path, tmp_path: Path
) -> None:
    report = run_staged(build / "onboard", tmp_path, [
        http_call("onboard", "GET", "/health"),
        http_call("onboard", "POST", "/api/v1/admin/bootstrap", {}, ROOT),
        http_call("onboard", "POST", "/api/v1/organizations/onboard",
                  {"org_slug": "acme", "company_name": "Acme", "admin_email": "finops@acme.example.com"}, ROOT),
    ])  # fmt: skip
    health, bootstrap, onboard = report["results"]
    assert health["status"] == 200 and health["json"]["status"] == "ok"
    assert bootstrap["status"] == 200, bootstrap
    assert onboard["status"] == 201 and onboard["json"]["api_key"].startswith("acme_api_"), onboard


def test_staged_trigger_answers_health_and_acknowledges_schedules(build: Path, tmp_path: Path) -> None:
    report = run_staged(build / "trigger", tmp_path, [
        http_call("trigger", "GET", "/health"),
        http_call("trigger", "GET", "/api/v1/pipelines/runs"),
        push_call("trigger_schedules", b"not json", {}, "convergence-schedules"),
        {"bootstrap": True},
        push_call("trigger_schedules", SCHEDULE_EVERY_TENANT, {"template": "gcp/example/dryrun"},
                  "convergence-schedules"),
    ])  # fmt: skip
    health, runs, malformed, _bootstrap, no_tenants = report["results"]
    assert health["status"] == 200 and health["json"]["status"] == "ok"
    assert runs["status"] == 401 and runs["json"]["error"], runs
    assert 200 <= malformed["status"] < 300, malformed
    assert 200 <= no_tenants["status"] < 300, no_tenants
    assert any("dropping schedules message" in line for line in report["logged"]), report["logged"]


def test_staged_step_execute_acknowledges_dead_messages(build: Path, tmp_path: Path) -> None:
    step = {"tenant_id": "ghost_org", "run_id": "no_such_run"}
    report = run_staged(build / "step_execute", tmp_path, [
        push_call("step_execute", b"{not json", step, "convergence-steps"),
        push_call("step_execute", STEP_FOR_MISSING_RUN, step, "convergence-steps"),
        push_call("step_dead_letter", STEP_FOR_MISSING_RUN, step, "convergence-steps-dlq"),
        raw_push_call("step_execute", STEP_FOR_MISSING_RUN, step, "convergence-steps"),
    ])  # fmt: skip
    for result in report["results"]:
        assert 200 <= result["status"] < 300, result
    dropped = [line for line in report["logged"] if "dropping" in line]
    assert len(dropped) == 4, report["logged"]  # each reached its handler, which acknowledged it on purpose
