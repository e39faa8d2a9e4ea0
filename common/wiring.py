"""The composition root: the one place that picks adapters from settings and builds a function's runtime.

Entry points call `get_runtime()`; tests and the CLI hand in other adapters with `set_runtime()`. A cold
start builds (and imports) only what the configured mode uses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import flask

from common.api import events
from common.api.app import create_wsgi_app, http_handler
from common.bus.base import Bus
from common.bus.topology import declare_topology
from common.claims.base import Claims
from common.crypto.keyring import Keyring
from common.errors import ConfigurationError
from common.runtime import Runtime
from common.settings import Settings, get_settings
from common.warehouse.base import Warehouse

log = logging.getLogger(__name__)


def build_warehouse(settings: Settings) -> Warehouse:
    if settings.convergence_warehouse == "duckdb":
        from common.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(settings.duckdb_path)
    from common.warehouse.bigquery import BigQueryWarehouse

    return BigQueryWarehouse(settings.gcp_project_id, settings.bigquery_location, settings.bigquery_emulator_host)


def build_keyring(settings: Settings, warehouse: Warehouse, claims: Claims) -> Keyring:
    if settings.convergence_keyring == "local":
        from common.crypto.local import LocalKeyring

        return LocalKeyring(settings.keyset_path)
    from common.crypto.gcp_kms import GcpKmsKeyring
    from common.metadata.keysets import WarehouseKeysetStore

    if not settings.kms_key_name:
        raise ConfigurationError("KMS_KEY_NAME: required when CONVERGENCE_KEYRING=gcp-kms")
    # KMS_KEY_NAME wraps each tenant's keyset; the control dataset's tenant_keysets stores them.
    return GcpKmsKeyring(settings.kms_key_name, WarehouseKeysetStore(warehouse, settings.control_dataset, claims))


def build_claims(settings: Settings) -> Claims:
    if settings.convergence_claims == "local":
        from common.claims.local import LocalClaims

        return LocalClaims(settings.claims_path)
    from common.claims.gcs import GcsClaims, storage_client

    emulator = settings.claims_storage_emulator_host or settings.storage_emulator_host
    assert settings.claims_bucket is not None  # load_settings refuses gcs claims without a bucket
    return GcsClaims(storage_client(settings.gcp_project_id, emulator), settings.claims_bucket)


def build_local_bus(settings: Settings, **options: object) -> Bus:
    """A local bus wired as common.bus.topology declares: each subscription pushes to its entry point below."""
    from common.bus.local import LocalBus

    handlers = {"step_execute": step_execute, "step_dead_letter": step_dead_letter,
                "trigger_schedules": trigger_schedules}  # fmt: skip
    bus = LocalBus(settings.gcp_project_id, **options)  # type: ignore[arg-type]
    for subscription in declare_topology(settings).subscriptions:
        dead_letter: dict[str, Any] = {}  # without a policy, a failing message is redelivered until it succeeds
        if policy := subscription.dead_letter:
            dead_letter = {"dead_letter_topic": policy.topic, "max_attempts": policy.max_delivery_attempts}
        bus.subscribe(subscription.topic, handlers[subscription.handler], name=subscription.name, **dead_letter)
    return bus


def build_bus(settings: Settings) -> Bus:
    if settings.convergence_bus == "local":
        return build_local_bus(settings)
    from common.bus.pubsub import PubSubBus

    return PubSubBus(settings.gcp_project_id, emulator_host=settings.pubsub_emulator_host)


def build_runtime(settings: Settings | None = None) -> Runtime:
    """Adapters for the configured mode."""
    settings = settings or get_settings()
    warehouse, claims = build_warehouse(settings), build_claims(settings)
    return Runtime(settings, warehouse, build_bus(settings), build_keyring(settings, warehouse, claims), claims)


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


# What each deployed function runs, bound to this instance's runtime.


def function_http_handler(group: str) -> Callable[[flask.Request], flask.Response]:
    """The HTTP handler of one function (`onboard`, `trigger`, or `both` for `convergence serve`)."""
    return http_handler(group, get_runtime)


def wsgi_app(group: str = "both") -> flask.Flask:
    """A WSGI app serving a function group's routes on this instance's runtime."""
    return create_wsgi_app(group, get_runtime)


def step_execute(event: Any) -> None:
    events.handle_step_event(get_runtime(), event)


def step_dead_letter(event: Any) -> None:
    events.handle_dead_letter_event(get_runtime(), event)


def trigger_schedules(event: Any) -> None:
    events.handle_schedule_event(get_runtime(), event)
