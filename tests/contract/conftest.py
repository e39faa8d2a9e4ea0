"""Adapter factories for the contract suites: one suite per port, run against every adapter listed here.

To add an adapter (BigQuery via bqemulator, Pub/Sub emulator, Cloud KMS), add a module
`tests/contract/adapters_<name>.py` defining any of WAREHOUSE_FACTORIES, BUS_FACTORIES, KEYRING_FACTORIES,
CLAIMS_FACTORIES;
they are merged into the tables below. A factory receives the pytest request (to reach session fixtures
such as a running emulator) and, for warehouses and keyrings, the test's tmp_path. The suites use only the port's public methods; the bus suite also needs a `BusHarness`, which knows
how to subscribe a handler to a topic and wait until every delivery is settled.
"""

from __future__ import annotations

import importlib
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from common.bus.base import Bus
from common.bus.local import LocalBus
from common.claims.base import Claims
from common.claims.local import LocalClaims
from common.crypto.keyring import Keyring
from common.crypto.local import LocalKeyring
from common.warehouse.base import Warehouse
from common.warehouse.duckdb import DuckDBWarehouse

PROJECT = "contract-project"

# -- warehouse --------------------------------------------------------------------------------------------


def make_duckdb(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    return DuckDBWarehouse(tmp_path / "contract.duckdb")


WAREHOUSE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Warehouse]] = {"duckdb": make_duckdb}


# -- bus --------------------------------------------------------------------------------------------------

Handler = Callable[[Any], Any]


class BusHarness(ABC):
    """A bus plus what a test needs around it: subscriptions that push to a handler, and a way to wait."""

    #: Optional behaviours a suite may rely on; tests needing one are parametrised only over harnesses with it.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    bus: Bus
    _names = itertools.count()

    @abstractmethod
    def subscribe(
        self, topic: str, handler: Handler, *, dead_letter_topic: str | None = None, max_attempts: int = 5
    ) -> str:
        """Push every message of `topic` to `handler` (a CloudEvent function); return the subscription name."""

    @abstractmethod
    def wait_idle(self, timeout: float) -> bool:
        """Wait until every published message is acknowledged or dead-lettered; False on timeout."""

    def close(self) -> None:
        self.bus.close()

    def subscription_name(self, topic: str) -> str:
        return f"{topic}-contract-{next(self._names)}"


class LocalBusHarness(BusHarness):
    """The in-process bus: subscriptions are LocalBus.subscribe, idleness is LocalBus.drain."""

    capabilities = frozenset({"duplicate_deliveries"})

    def __init__(self, request: pytest.FixtureRequest | None = None, **faults: Any) -> None:
        self.bus = self.local = LocalBus(PROJECT, workers=4, retry_delay=0.01, max_retry_delay=0.05, **faults)

    def subscribe(
        self, topic: str, handler: Handler, *, dead_letter_topic: str | None = None, max_attempts: int = 5
    ) -> str:
        name = self.subscription_name(topic)
        self.local.subscribe(
            topic, handler, name=name, dead_letter_topic=dead_letter_topic, max_attempts=max_attempts
        )
        return name

    def wait_idle(self, timeout: float) -> bool:
        return self.local.drain(timeout)


BUS_FACTORIES: dict[str, Callable[..., BusHarness]] = {"local": LocalBusHarness}


def bus_adapters_with(capability: str) -> list[str]:
    return sorted(
        name for name, factory in BUS_FACTORIES.items() if capability in getattr(factory, "capabilities", ())
    )


# -- keyring ----------------------------------------------------------------------------------------------


def make_local_keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Keyring:
    return LocalKeyring(tmp_path / "contract-keyset.json")


KEYRING_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Keyring]] = {"local": make_local_keyring}


# -- claims -----------------------------------------------------------------------------------------------

#: A new instance's Claims over the one store of a test (each call: another instance, its own client).
ClaimsMaker = Callable[..., Claims]


def make_local_claims(request: pytest.FixtureRequest, tmp_path: Path) -> ClaimsMaker:
    return lambda **options: LocalClaims(tmp_path / "claims", **options)


CLAIMS_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], ClaimsMaker]] = {"local": make_local_claims}


def _merge_adapter_modules() -> None:
    """Fold tests/contract/adapters_*.py into the factory tables."""
    for path in sorted(Path(__file__).parent.glob("adapters_*.py")):
        module = importlib.import_module(f"tests.contract.{path.stem}")
        WAREHOUSE_FACTORIES.update(getattr(module, "WAREHOUSE_FACTORIES", {}))
        BUS_FACTORIES.update(getattr(module, "BUS_FACTORIES", {}))
        KEYRING_FACTORIES.update(getattr(module, "KEYRING_FACTORIES", {}))
        CLAIMS_FACTORIES.update(getattr(module, "CLAIMS_FACTORIES", {}))


_merge_adapter_modules()


# -- fixtures (after the merge, so every adapter is a parameter) ---------------------------------------


@pytest.fixture(params=sorted(WAREHOUSE_FACTORIES), ids=str)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    wh = WAREHOUSE_FACTORIES[request.param](request, tmp_path)
    try:
        yield wh
    finally:
        wh.close()


@pytest.fixture(params=sorted(BUS_FACTORIES), ids=str)
def bus_harness(request: pytest.FixtureRequest) -> Iterator[BusHarness]:
    harness = BUS_FACTORIES[request.param](request)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(params=bus_adapters_with("duplicate_deliveries"), ids=str)
def duplicating_bus_harness(request: pytest.FixtureRequest) -> Iterator[BusHarness]:
    """A harness whose bus delivers every message twice (Pub/Sub's at-least-once, made certain)."""
    harness = BUS_FACTORIES[request.param](request, duplicate_deliveries=2)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture(params=sorted(KEYRING_FACTORIES), ids=str)
def keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Keyring:
    return KEYRING_FACTORIES[request.param](request, tmp_path)


@pytest.fixture(params=sorted(CLAIMS_FACTORIES), ids=str)
def claims_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClaimsMaker]:
    """Makes Claims instances over one store; every instance made is closed after the test."""
    made: list[Claims] = []
    factory = CLAIMS_FACTORIES[request.param](request, tmp_path)

    def make(**options: Any) -> Claims:
        made.append(factory(**options))
        return made[-1]

    yield make
    for claims in made:
        claims.close()
