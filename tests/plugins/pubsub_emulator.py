"""Session fixture: the official Pub/Sub emulator on a free loopback port, started on first use.

Tests get its host ("127.0.0.1:PORT") and hand it to clients explicitly: the autouse clean_environment
fixture removes PUBSUB_EMULATOR_HOST from every test's environment. A missing gcloud, emulator component or
Java fails the tests that need the emulator, with the reason; it never skips them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.errors import DependencyUnavailable
from convergence.emulators.process import free_port
from convergence.emulators.pubsub import start_pubsub_emulator


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The host:port of a running Pub/Sub emulator, stopped (with its Java child) at the end of the session."""
    folder = tmp_path_factory.mktemp("pubsub-emulator")
    log = folder / "emulator.log"
    port = free_port()
    try:
        emulator = start_pubsub_emulator(port, folder / "data", log)
    except DependencyUnavailable as exc:
        reason = exc.message
    else:
        reason = None
    if reason is not None:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        pytest.fail("\n".join([f"the Pub/Sub emulator could not start: {reason}", *tail]), pytrace=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        emulator.stop()
