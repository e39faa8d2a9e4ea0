"""Session fixture: gcp-storage-emulator (the Cloud Storage JSON API, in memory) on a free loopback port.

Tests get its endpoint ("http://127.0.0.1:PORT") and pass it on explicitly (STORAGE_EMULATOR_HOST for the
platform's settings, client_options for a test's own client); tests keep apart by bucket name. A missing
emulator fails the tests that need it, with the reason; it never skips them.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import DependencyUnavailable
from convergence.emulators.process import ManagedProcess, free_port


def _emulator_program() -> str | None:
    beside_python = Path(sys.executable).parent / "gcp-storage-emulator"
    return str(beside_python) if beside_python.exists() else shutil.which("gcp-storage-emulator")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint of a running Cloud Storage emulator, stopped at the end of the session."""
    program = _emulator_program()
    if program is None:
        pytest.fail("gcp-storage-emulator is not installed: pip install -e '.[test]'", pytrace=False)
    folder = tmp_path_factory.mktemp("gcs-emulator")
    log = folder / "emulator.log"
    port = free_port()
    command = [program, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    process = ManagedProcess("gcs-emulator", command, port, log_path=log, cwd=folder)
    try:
        process.start(timeout=60)
    except DependencyUnavailable as exc:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        pytest.fail(
            "\n".join([f"the Cloud Storage emulator could not start: {exc.message}", *tail]), pytrace=False
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
