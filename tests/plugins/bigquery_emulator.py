"""Session fixture: one bqemulator for the whole test session; tests keep apart by project or dataset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.errors import DependencyUnavailable
from convergence.emulators.bigquery import start_bigquery_emulator
from convergence.emulators.process import ManagedProcess, free_port_pair


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint (http://127.0.0.1:PORT) of a bqemulator serving for this session.

    A missing or broken emulator fails the tests that need it (never skips): .ci/run installs it with
    scripts/install-bqemulator.sh.
    """
    folder = tmp_path_factory.mktemp("bqemulator")
    log = folder / "bqemulator.log"
    port = free_port_pair()
    process: ManagedProcess | None = None
    failure = ""
    try:
        process = start_bigquery_emulator(port, folder / "data", log, persistent=False)
    except DependencyUnavailable as exc:
        failure = f"bqemulator could not start: {exc.message}"
    if process is None:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"{failure}\n{tail}".strip(), pytrace=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
