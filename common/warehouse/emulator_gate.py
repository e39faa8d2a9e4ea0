"""One request at a time to bqemulator, across this machine's processes (emulator mode only).

bqemulator 1.4 serves REST on its event-loop thread and the Storage Write API on a gRPC worker thread, both
on one DuckDB connection. An append registers its Arrow rows on that connection and needs the GIL to scan
them while holding the connection; a REST request arriving then holds the GIL while it waits for the
connection: the emulator deadlocks (both requests time out, and every later one). Real BigQuery has no such
limit. So with BIGQUERY_EMULATOR_HOST set, every HTTP request of the BigQuery client and every append takes
this gate: a lock of this process and an advisory file lock shared by every process talking to the same
emulator. The emulator handles REST requests one at a time anyway, so the gate costs little.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_gates: dict[str, EmulatorGate] = {}
_gates_lock = threading.Lock()


class EmulatorGate:
    """Mutual exclusion of requests to one emulator endpoint, among threads and processes."""

    def __init__(self, endpoint: str) -> None:
        digest = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
        self.path = Path(tempfile.gettempdir()) / f"convergence-bqemulator-{digest}.lock"
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._file: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._file = open(self.path, "a")  # noqa: SIM115  (held across the block)
                fcntl.flock(self._file, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._file, fcntl.LOCK_UN)
                    self._file.close()
                    self._file = None

    def wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any, **kwargs: Any) -> Any:
            with self.held():
                return call(*args, **kwargs)

        return gated


def gate_for(endpoint: str) -> EmulatorGate:
    """The gate of an emulator endpoint (one per endpoint in this process)."""
    with _gates_lock:
        if endpoint not in _gates:
            _gates[endpoint] = EmulatorGate(endpoint)
        return _gates[endpoint]
