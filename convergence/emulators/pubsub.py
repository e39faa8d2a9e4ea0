"""The official Pub/Sub emulator (`gcloud beta emulators pubsub start`), as a managed child process.

gcloud runs the emulator as a Java child; both live in one process group that is stopped as a whole, so
stopping the emulator never leaves a JVM holding its port.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from common.errors import DependencyUnavailable
from convergence.emulators.process import ManagedProcess

INSTALL_HINT = (
    "install the Google Cloud CLI with its Pub/Sub emulator component "
    "(apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator, or "
    "gcloud components install beta pubsub-emulator) and a Java runtime (11 or later)"
)


def sdk_root(gcloud: str) -> Path:
    """The Cloud SDK folder of a gcloud executable (…/google-cloud-sdk/bin/gcloud → …/google-cloud-sdk)."""
    return Path(gcloud).resolve().parent.parent


def emulator_jars(gcloud: str) -> list[Path]:
    """The emulator's jar(s) in the SDK of `gcloud` (their names carry the emulator version)."""
    return sorted(
        (sdk_root(gcloud) / "platform" / "pubsub-emulator" / "lib").glob("cloud-pubsub-emulator-*.jar")
    )


def pubsub_emulator_command(port: int, data_dir: Path, gcloud: str = "gcloud") -> list[str]:
    """The command line that starts the emulator on 127.0.0.1:`port` with its state in `data_dir`."""
    return [
        gcloud, "beta", "emulators", "pubsub", "start",
        f"--host-port=127.0.0.1:{port}", f"--data-dir={data_dir}", "--quiet",
    ]  # fmt: skip


def check_pubsub_emulator_installed() -> str:
    """The gcloud executable, after checking gcloud, the emulator component and Java are all present."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise DependencyUnavailable(
            f"the Pub/Sub emulator needs gcloud, which is not on PATH: {INSTALL_HINT}"
        )
    if not emulator_jars(gcloud):
        raise DependencyUnavailable(
            f"the Pub/Sub emulator component is not installed in {sdk_root(gcloud)}: {INSTALL_HINT}"
        )
    if shutil.which("java") is None:
        raise DependencyUnavailable(f"the Pub/Sub emulator needs Java, which is not on PATH: {INSTALL_HINT}")
    return gcloud


def live_group_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are still running (zombies, which hold no port, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: any member, zombie or not
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except ProcessLookupError:
            return []
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


class EmulatorProcess(ManagedProcess):
    """A ManagedProcess whose stop reaps gcloud and waits only for the group's live processes (the JVM)."""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        pgid = self.process.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            self.process.poll()
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.poll()  # reap gcloud: an unreaped leader would keep the group alive as a zombie
            if not live_group_members(pgid):
                break
            time.sleep(0.05)
        else:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=5)


def start_pubsub_emulator(
    port: int, data_dir: Path, log_path: Path | None = None, timeout: float = 60.0
) -> ManagedProcess:
    """Start the emulator on 127.0.0.1:`port` and wait until it listens; stop it with `.stop()`.

    Its host for clients is `127.0.0.1:{port}` (PUBSUB_EMULATOR_HOST). Output goes to `log_path`.
    """
    gcloud = check_pubsub_emulator_installed()
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)  # gcloud writes env.yaml there and fails if it is missing
    process = EmulatorProcess(
        name="Pub/Sub emulator",
        command=pubsub_emulator_command(port, data_dir, gcloud),
        port=port,
        log_path=Path(log_path) if log_path else None,
        env={"CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
    )
    return process.start(timeout=timeout)
