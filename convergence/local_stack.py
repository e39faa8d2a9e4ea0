"""`convergence local up`: the deployed topology on one machine, with the official emulators.

Processes: the Pub/Sub emulator, bqemulator, and the functions as separate functions-framework processes —
onboard (HTTP), trigger (HTTP), trigger_schedules (the trigger function's CloudEvent entry point, deployed
as its own function in Google Cloud) and step_execute (CloudEvent; it also serves the dead-letter
subscription). Pub/Sub push subscriptions connect them as common.bus.topology declares, as in production
(only the retry backoff is shorter, and attempts are kept within what Pub/Sub allows).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from common.bus.topology import RetryPolicy, declare_topology
from common.errors import ConfigurationError
from common.settings import CONFIGS_DIR, Settings
from convergence.emulators.process import ManagedProcess, free_port, free_port_pair, stop_group

REPO = CONFIGS_DIR.parent
FUNCTIONS = (
    # name, target, source folder, signature
    ("onboard", "onboard", "onboard", "http"),
    ("trigger", "trigger", "trigger", "http"),
    ("trigger_schedules", "trigger_schedules", "trigger", "cloudevent"),
    ("step_execute", "step_execute", "step_execute", "cloudevent"),
)
# Short backoff keeps a failing step's path to the dead-letter topic to seconds locally.
LOCAL_RETRY = RetryPolicy(minimum_backoff_seconds=1, maximum_backoff_seconds=5)


@dataclass
class LocalStack:
    """Everything `local up` starts, and how to reach it."""

    settings: Settings
    root_key: str
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[ManagedProcess] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.settings.convergence_home / "local-stack"

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    def start(self) -> LocalStack:
        """Start emulators, functions and subscriptions; stop whatever started if a later part fails."""
        from convergence.emulators.bigquery import start_bigquery_emulator
        from convergence.emulators.pubsub import start_pubsub_emulator
        from convergence.pubsub_admin import ensure_topology

        if self.state_file.exists():
            raise ConfigurationError(f"a local stack already runs from {self.folder}: run `convergence local down`")
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        project = self.settings.gcp_project_id
        try:
            bigquery_port = free_port_pair()  # and the next one: bqemulator serves gRPC there
            pubsub_port = next(p for p in iter(free_port, None) if p not in (bigquery_port, bigquery_port + 1))
            self.processes.append(
                start_pubsub_emulator(pubsub_port, self.folder / "pubsub", logs / "pubsub-emulator.log")
            )
            self.processes.append(
                start_bigquery_emulator(bigquery_port, self.folder / "bigquery", logs / "bqemulator.log")
            )
            self.env = {
                "CONVERGENCE_HOME": str(self.settings.convergence_home.resolve()),
                "CONVERGENCE_WAREHOUSE": "bigquery",
                "CONVERGENCE_BUS": "pubsub",
                "CONVERGENCE_KEYRING": "local",
                "GCP_PROJECT_ID": project,
                "BIGQUERY_EMULATOR_HOST": f"http://{self.host}:{bigquery_port}",
                "PUBSUB_EMULATOR_HOST": f"{self.host}:{pubsub_port}",
                "CA_ROOT_API_KEY": self.root_key,
                "STEP_MAX_ATTEMPTS": str(self.settings.step_max_attempts),
                **self.extra_env,
            }
            self.endpoints = {"pubsub-emulator": self.env["PUBSUB_EMULATOR_HOST"],
                              "bigquery-emulator": self.env["BIGQUERY_EMULATOR_HOST"]}  # fmt: skip
            for name, target, folder, signature in FUNCTIONS:
                port = free_port()
                command = [
                    sys.executable, "-m", "functions_framework", "--target", target,
                    "--source", str(REPO / "functions" / folder / "main.py"),
                    "--signature-type", signature, "--host", self.host, "--port", str(port),
                ]  # fmt: skip
                process = ManagedProcess(name, command, port, env=self.env, log_path=logs / f"{name}.log", cwd=REPO)
                self.processes.append(process.start(timeout=60))
                self.endpoints[name] = f"http://{self.host}:{port}"
            topology = declare_topology(self.settings).within_pubsub_limits().with_delivery(
                minimum_backoff=LOCAL_RETRY.minimum_backoff_seconds,
                maximum_backoff=LOCAL_RETRY.maximum_backoff_seconds,
            )
            ensure_topology(
                project,
                topology,
                {s.topic: s.push_endpoint(self.endpoints[s.function], project) for s in topology.subscriptions},
                emulator_host=self.env["PUBSUB_EMULATOR_HOST"],
            )
        except BaseException:
            self.stop()
            raise
        self.state_file.write_text(
            json.dumps({"pids": [p.pid for p in self.processes], "endpoints": self.endpoints, "env": {
                k: v for k, v in self.env.items() if k != "CA_ROOT_API_KEY"}}, indent=2)  # fmt: skip
        )
        return self

    def stop(self) -> None:
        """Stop every process this stack started (functions first, emulators last)."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self.state_file.unlink(missing_ok=True)


def stop_detached(home: Path) -> int:
    """Stop a stack started with --detach from its state file; the number of process groups stopped."""
    state_file = home / "local-stack" / "state.json"
    if not state_file.exists():
        return 0
    pids = json.loads(state_file.read_text()).get("pids", [])
    for pid in reversed(pids):
        stop_group(int(pid))
    state_file.unlink(missing_ok=True)
    return len(pids)


def env_lines(stack: LocalStack) -> list[str]:
    """`export NAME=value` lines a user pastes to talk to the stack with the CLI or client libraries."""
    return [f"export {name}={value}" for name, value in stack.env.items()]


