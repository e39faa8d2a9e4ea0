"""bqemulator, run from its own virtual environment (its DuckDB and pins conflict with the project's).

scripts/install-bqemulator.sh creates that environment at `<repo>/.venv-bqemulator`, with DuckDB's spatial
and avro extensions installed from PyPI wheels so the emulator never downloads anything when it starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.errors import DependencyUnavailable
from common.warehouse.bigquery_write import STORAGE_PORT_OFFSET
from convergence.emulators.process import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV_BIN = REPO / ".venv-bqemulator" / "bin" / "bqemulator"
INSTALL_HINT = "run scripts/install-bqemulator.sh (creates .venv-bqemulator) or set BQEMULATOR_BIN"


def bqemulator_executable() -> str:
    """The bqemulator program: $BQEMULATOR_BIN, else .venv-bqemulator's, else the one on PATH."""
    from common.settings import get_settings

    configured = get_settings().bqemulator_bin
    if configured:
        if not os.access(configured, os.X_OK):
            raise DependencyUnavailable(
                f"BQEMULATOR_BIN={configured} is not an executable file; {INSTALL_HINT}"
            )
        return configured
    if os.access(DEFAULT_VENV_BIN, os.X_OK):
        return str(DEFAULT_VENV_BIN)
    on_path = shutil.which("bqemulator")
    if on_path:
        return on_path
    raise DependencyUnavailable(f"bqemulator is not installed: {INSTALL_HINT}")


def bigquery_emulator_command(port: int, data_dir: Path, *, persistent: bool = True) -> list[str]:
    """The command line serving the BigQuery REST API on 127.0.0.1:`port` and the Storage Read and Write
    APIs (gRPC) on `port` + 1, where the warehouse adapter looks for them (`common.warehouse.bigquery_write`)."""
    return [
        bqemulator_executable(),
        "start",
        "--rest-host", "127.0.0.1",
        "--rest-port", str(port),
        "--grpc-host", "127.0.0.1",
        "--grpc-port", str(port + STORAGE_PORT_OFFSET),
        "--persistent" if persistent else "--ephemeral",
        "--data-dir", str(data_dir),
        "--log-level", "warning",
        "--log-format", "console",
    ]  # fmt: skip


def start_bigquery_emulator(
    port: int, data_dir: Path, log_path: Path | None = None, *, persistent: bool = True, timeout: float = 60.0
) -> ManagedProcess:
    """Start bqemulator and wait until it listens; its data (when persistent) and working files go in data_dir."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(
        "bigquery-emulator",
        bigquery_emulator_command(port, data_dir, persistent=persistent),
        port,
        log_path=log_path,
        cwd=data_dir,
    )
    return process.start(timeout=timeout)
