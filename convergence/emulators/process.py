"""A child process that serves on a loopback port: started, waited for, stopped cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import DependencyUnavailable


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_pair() -> int:
    """A loopback port that is free, with the one after it free too (bqemulator serves gRPC there)."""
    for _ in range(100):
        port = free_port()
        if port < 65535 and not port_open(port + 1):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise OSError("no two adjacent free loopback ports")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


@dataclass
class ManagedProcess:
    """One emulator or function process, in its own process group so stopping it stops its children."""

    name: str
    command: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    cwd: Path | None = None
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> ManagedProcess:
        """Start the process and wait until its port accepts connections."""
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                self.process = subprocess.Popen(
                    self.command, env={**os.environ, **self.env}, cwd=self.cwd,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        else:
            self.process = subprocess.Popen(
                self.command, env={**os.environ, **self.env}, cwd=self.cwd,
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DependencyUnavailable(
                    f"{self.name} exited with code {self.process.returncode} before serving"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if port_open(self.port):
                return self
            time.sleep(0.1)
        self.stop()
        raise DependencyUnavailable(f"{self.name} did not listen on port {self.port} within {timeout:.0f} s")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, wait for the leader, then SIGKILL whatever is left of the group."""
        if self.process is None or self.process.poll() is not None:
            return
        pid = self.process.pid
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=5)


def stop_group(pid: int, timeout: float = 15.0) -> None:
    """Stop a process group led by `pid` that is not our child (a detached stack): SIGTERM, wait, SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for_stop_signal() -> None:
    """Block until SIGTERM or Ctrl-C: how a stand-in run as a child process of the local stack serves."""
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
