"""`convergence local up` starts the stack with one command and stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from convergence.emulators.process import port_open

CLI = str(Path(sys.executable).with_name("convergence"))
ENDPOINT = re.compile(r"^(onboard|trigger|trigger_schedules|step_execute): (http://127\.0\.0\.1:(\d+))$")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVERGENCE_", "CA_ROOT", "PUBSUB_", "BIGQUERY_"))}
    return env | {"CONVERGENCE_HOME": str(home)}


def _read_endpoints(process: subprocess.Popen, timeout: float = 180) -> tuple[dict[str, str], list[str]]:
    endpoints: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        match = ENDPOINT.match(lines[-1])
        if match:
            endpoints[match.group(1)] = match.group(2)
        if lines[-1].startswith("# logs:"):
            break
    return endpoints, lines


def test_local_up_prints_endpoints_and_environment_and_stops_on_ctrl_c(tmp_path):
    process = subprocess.Popen([CLI, "local", "up"], env=_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        endpoints, lines = _read_endpoints(process)
        assert {"onboard", "trigger"} <= set(endpoints), lines
        assert lines[0].startswith("onboard: http://127.0.0.1:") and lines[1].startswith("trigger: http://127.0.0.1:")
        exports = {line.split("=", 1)[0].removeprefix("export ") for line in lines if line.startswith("export ")}
        assert {"PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "CONVERGENCE_WAREHOUSE", "CONVERGENCE_BUS"} <= exports
        for name in ("onboard", "trigger"):
            assert httpx.get(f"{endpoints[name]}/health", timeout=30).json()["status"] == "ok"
        ports = [int(url.rsplit(":", 1)[1]) for url in endpoints.values()]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert not any(port_open(port) for port in ports)
        assert not (tmp_path / "local-stack" / "state.json").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_local_up_detached_then_down(tmp_path):
    up = subprocess.run([CLI, "local", "up", "--detach"], env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert up.returncode == 0, up.stderr
    endpoints = {m.group(1): m.group(2) for m in map(ENDPOINT.match, up.stdout.splitlines()) if m}
    try:
        assert httpx.get(f"{endpoints['trigger']}/health", timeout=30).status_code == 200
        again = subprocess.run([CLI, "local", "up", "--detach"], env=_env(tmp_path), capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert again.returncode != 0 and "local down" in again.stderr
    finally:
        down = subprocess.run([CLI, "local", "down"], env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout
    ports = [int(url.rsplit(":", 1)[1]) for url in endpoints.values()]
    deadline = time.monotonic() + 30
    while any(port_open(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(port_open(p) for p in ports)
