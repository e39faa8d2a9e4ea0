"""`convergence serve` as a real process, spoken to over real HTTP with httpx."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import Settings

CONVERGENCE = Path(sys.executable).with_name("convergence")
ROOT_KEY_LINE = re.compile(r"Root key \(shown once; kept in (?P<path>.+?)\): (?P<key>\S+)")
SERVING_LINE = re.compile(r"Convergence serving on (?P<url>http://127\.0\.0\.1:(?P<port>\d+)) \(")
START_TIMEOUT, RUN_TIMEOUT, STOP_TIMEOUT = 60.0, 30.0, 10.0


@dataclass
class Served:
    """A running `convergence serve` and what it printed."""

    process: subprocess.Popen
    home: Path
    url: str = ""
    root_key: str | None = None
    root_key_path: str | None = None
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue = field(default_factory=queue.Queue)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` and return the exit code (raises if the process outlives STOP_TIMEOUT)."""
        self.process.send_signal(sig)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def all_output(self) -> str:
        """Everything printed on stdout so far (call after the process ended to get it all)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return "".join(self.lines)
            if line is not None:
                self.lines.append(line)


def server_environment(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Convergence setting, plus a private home."""
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    return env | {"CONVERGENCE_HOME": str(home), "PYTHONUNBUFFERED": "1", "COLUMNS": "250"} | extra


def start_serve(home: Path, **extra_env: str) -> Served:
    """Start `convergence serve --port 0` and wait until it says where it listens."""
    stderr = open(home.parent / f"serve-{uuid.uuid4().hex[:8]}.stderr", "wb")  # noqa: SIM115 - kept by the child
    process = subprocess.Popen(
        [str(CONVERGENCE), "serve", "--port", "0"], env=server_environment(home, **extra_env),
        stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1,
    )  # fmt: skip
    stderr.close()
    served = Served(process, home)

    def pump() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            served._queue.put(line)
        served._queue.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = served._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        served.lines.append(line)
        if found := ROOT_KEY_LINE.search(line):
            served.root_key, served.root_key_path = found["key"], found["path"]
        if found := SERVING_LINE.search(line):
            served.url = found["url"]
            return served
    process.kill()
    process.wait()
    raise AssertionError(f"serve did not start within {START_TIMEOUT} s; stdout: {''.join(served.lines)!r}")


def assert_json_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One `convergence serve` for this module, with no root key configured and a 2 KiB JSON limit."""
    home = tmp_path_factory.mktemp("serve") / "home"
    served = start_serve(home, MAX_JSON_BYTES="2048")
    yield served
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@pytest.fixture(scope="module")
def http(server: Served):
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def root(server: Served) -> dict[str, str]:
    assert server.root_key, "serve did not print a generated root key"
    return {"X-CA-Root-Key": server.root_key}


@pytest.fixture(scope="module")
def tenants(http: httpx.Client, root: dict[str, str]) -> dict[str, dict[str, str]]:
    """Bootstrap over HTTP and onboard acme and globex; their key headers."""
    response = http.post("/api/v1/admin/bootstrap", headers=root, json={})
    assert response.status_code == 200, response.text
    keys = {}
    for org in ("acme", "globex"):
        body = {"org_slug": org, "company_name": org.title(), "admin_email": f"admin@{org}.example.com"}
        response = http.post("/api/v1/organizations/onboard", headers=root, json=body)
        assert response.status_code == 201, response.text
        assert response.json()["org_slug"] == org
        assert response.json()["api_key"].startswith(f"{org}_api_")
        keys[org] = {"X-API-Key": response.json()["api_key"]}
    return keys


def test_serve_without_a_root_key_generates_one_and_keeps_it_owner_only(server: Served):
    assert server.root_key and len(server.root_key) >= 32
    key_file = server.home / "root_key"
    assert server.root_key_path == str(key_file)
    assert key_file.read_text().strip() == server.root_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_health_answers_ok_over_http(http: httpx.Client):
    response = http.get("/health")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == "ok"


def test_onboarded_org_runs_dryrun_to_complete_over_http(
    http: httpx.Client, tenants: dict[str, dict[str, str]]
):
    acme = tenants["acme"]
    accepted = http.post(
        "/api/v1/pipelines/run/acme/gcp/example/dryrun", headers=acme, json={"trigger_by": "e2e"}
    )
    assert accepted.status_code == 202, accepted.text
    run_id = accepted.json()["pipeline_logging_id"]
    assert accepted.json()["pipeline_id"] == "acme-gcp-example-dryrun"

    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        run = http.get(f"/api/v1/pipelines/runs/{run_id}", headers=acme).json()
        if run["status"] in ("COMPLETE", "FAILED") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert run["status"] == "COMPLETE", run
    assert run["trigger_by"] == "e2e"
    assert [s["status"] for s in run["steps"]] == ["COMPLETE", "COMPLETE", "SKIPPED"]
    other = http.get(f"/api/v1/pipelines/runs/{run_id}", headers=tenants["globex"])
    assert_json_error(other, 404)


def test_every_error_status_is_a_json_object_over_http(
    http: httpx.Client, root: dict[str, str], tenants: dict[str, dict[str, str]]
):
    acme = tenants["acme"]
    onboard = "/api/v1/organizations/onboard"
    new_org = {"org_slug": "initech", "company_name": "Initech", "admin_email": "admin@initech.example.com"}

    bad_json = http.post("/api/v1/admin/bootstrap", headers=root | {"Content-Type": "application/json"},
                         content=b'{"force_recreate_dataset": ')  # fmt: skip
    assert_json_error(bad_json, 400)
    assert_json_error(http.get("/api/v1/pipelines/runs"), 401)
    assert_json_error(http.post(onboard, headers={"X-CA-Root-Key": "not-the-root-key"}, json=new_org), 401)
    assert_json_error(http.get("/api/v1/data/globex/tables", headers=acme), 403)
    assert_json_error(http.get(f"/api/v1/pipelines/runs/{uuid.uuid4()}", headers=acme), 404)
    assert_json_error(http.get("/no/such/route"), 404)
    wrong_method = http.get("/api/v1/admin/bootstrap", headers=root)
    assert_json_error(wrong_method, 405)
    assert "POST" in wrong_method.headers.get("allow", "")
    again = {"org_slug": "acme", "company_name": "Acme", "admin_email": "admin@acme.example.com"}
    assert_json_error(http.post(onboard, headers=root, json=again), 409)
    padded = json.dumps(new_org | {"company_name": "I" * 4096}).encode()
    assert len(padded) > 4096
    assert_json_error(
        http.post(onboard, headers=root | {"Content-Type": "application/json"}, content=padded), 413
    )
    xml = http.post("/api/v1/data/acme/uploads/things", headers=acme | {"Content-Type": "application/xml"},
                    content=b"<rows><row a='1'/></rows>")  # fmt: skip
    assert_json_error(xml, 415)
    assert_json_error(http.post(onboard, headers=root, json=new_org | {"org_slug": "Not Valid!"}), 422)
    assert http.get("/health").status_code == 200, "the server survived every bad request"


def test_sigterm_and_sigint_stop_serve_cleanly_and_a_restart_keeps_the_root_key(tmp_path: Path):
    home = tmp_path / "lifecycle-home"
    first = start_serve(home)
    assert first.root_key
    assert httpx.get(f"{first.url}/health", timeout=10).status_code == 200
    assert first.stop(signal.SIGTERM) == 0

    second = start_serve(home)
    with httpx.Client(base_url=second.url, timeout=30.0) as http:
        assert (
            http.post(
                "/api/v1/admin/bootstrap", headers={"X-CA-Root-Key": first.root_key}, json={}
            ).status_code
            == 200
        )
        assert_json_error(
            http.post("/api/v1/admin/bootstrap", headers={"X-CA-Root-Key": "guess"}, json={}), 401
        )
    assert second.stop(signal.SIGINT) == 0
    assert second.root_key is None
    assert "Root key" not in second.all_output()
    assert (home / "root_key").read_text().strip() == first.root_key
