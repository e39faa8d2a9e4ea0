"""The adapters one function instance uses, built once from settings through a lazy getter.

Handlers call `get_runtime()`; tests hand in other adapters with `set_runtime()`. A cold start builds only
what is asked for.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from common.bus.base import Bus
from common.crypto.keyring import Keyring
from common.settings import Settings, get_settings
from common.warehouse.base import Warehouse

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Settings plus the three adapters: warehouse, bus, keyring."""

    settings: Settings
    warehouse: Warehouse
    bus: Bus
    keyring: Keyring
    caches: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self.bus.close()
        close_keyring = getattr(self.keyring, "close", None)
        if close_keyring is not None:
            close_keyring()
        self.warehouse.close()


def build_warehouse(settings: Settings) -> Warehouse:
    if settings.convergence_warehouse == "duckdb":
        from common.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path)
    from common.warehouse.bigquery import BigQueryWarehouse

    return BigQueryWarehouse(settings.gcp_project_id, settings.bigquery_location, settings.bigquery_emulator_host)


def build_keyring(settings: Settings, warehouse: Warehouse) -> Keyring:
    if settings.convergence_keyring == "local":
        from common.crypto.local import LocalKeyring

        return LocalKeyring(settings.keyset_path)
    from common.crypto.gcp_kms import gcp_kms_keyring

    return gcp_kms_keyring(settings, warehouse)


def build_local_bus(settings: Settings, **options: object) -> Bus:
    """A local bus wired like the deployed topology: steps → step_execute, DLQ → closer, schedules → trigger."""
    from common.bus.local import LocalBus
    from common.services import execution, scheduling

    bus = LocalBus(settings.gcp_project_id, **options)  # type: ignore[arg-type]
    bus.subscribe(
        settings.steps_topic,
        execution.handle_step_event,
        name=f"{settings.steps_topic}-push",
        dead_letter_topic=settings.dead_letter_topic,
        max_attempts=settings.step_max_attempts,
    )
    bus.subscribe(settings.dead_letter_topic, execution.handle_dead_letter_event, name=f"{settings.dead_letter_topic}-sub")
    bus.subscribe(settings.schedules_topic, scheduling.handle_schedule_event, name=f"{settings.schedules_topic}-push")
    return bus


def build_bus(settings: Settings) -> Bus:
    if settings.convergence_bus == "local":
        return build_local_bus(settings)
    from common.bus.pubsub import PubSubBus

    return PubSubBus(settings.gcp_project_id, emulator_host=settings.pubsub_emulator_host)


def build_runtime(settings: Settings | None = None) -> Runtime:
    """Adapters for the configured mode."""
    settings = settings or get_settings()
    warehouse = build_warehouse(settings)
    return Runtime(settings, warehouse, build_bus(settings), build_keyring(settings, warehouse))


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This instance's runtime, built on first use."""
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = build_runtime()
    return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install a runtime (tests, the CLI); None forgets the current one."""
    global _runtime
    with _lock:
        _runtime = runtime


def reset_runtime() -> None:
    """Close and forget the current runtime."""
    global _runtime
    with _lock:
        current, _runtime = _runtime, None
    if current is not None:
        current.close()
