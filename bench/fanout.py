"""Fan-out benchmark: one scheduled run to N onboarded tenants, on the local bus and the Pub/Sub emulator.

For each bus it measures, in one process and one warehouse (DuckDB):
- **fan-out**: the schedules message for "*" split into chunk messages, each chunk starting its tenants' runs
  and publishing their step-0 messages in one batch (what the trigger function does);
- **baseline**: the naive loop, one start_run + one publish (waiting for it) per tenant.
It prints seconds until every step-0 message is published, messages per second, the peak resident memory of
the phase, and the ratio. Steps are not executed: the steps topic only counts what arrives. Tenants are
onboarded the fast way (control rows plus a dataset with pipeline_runs each) so setup stays in minutes.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import typer
from rich.console import Console
from rich.table import Table

console = Console()
ROOT_KEY = "bench-root-key-0123456789abcdef"


class PeakRss:
    """Samples this process's resident memory (VmRSS) every 20 ms; `peak_mib` of the sampled phase."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self._stop.wait(0.02)

    def __enter__(self) -> Self:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


def _environment(home: Path, bus: str, emulator: str | None) -> None:
    os.environ.update({"CONVERGENCE_HOME": str(home), "CA_ROOT_API_KEY": ROOT_KEY, "CONVERGENCE_BUS": bus})
    if emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator
    else:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    from common.settings import reset_settings
    from common.wiring import reset_runtime

    reset_settings()
    reset_runtime()


def seed_tenants(rt: Any, count: int) -> list[str]:
    """`count` active tenants on the enterprise plan, each with its dataset and run log."""
    from common.contracts.onboarding import BootstrapRequest
    from common.metadata.control_dataset import control_ref
    from common.metadata.schemas import load_schema
    from common.services import onboarding
    from common.warehouse.duckdb import table_ddl
    from common.warehouse.sql import quote_identifier

    onboarding.bootstrap(rt, BootstrapRequest())
    now = dt.datetime.now(dt.UTC)
    tenants = [f"bench_{i:05d}" for i in range(count)]
    wh = rt.warehouse
    profiles = [{"org_slug": t, "company_name": t, "admin_email": f"{t}@example.com", "subscription_plan": "enterprise",
                 "status": "ACTIVE", "dataset_id": t, "created_at": now, "updated_at": now} for t in tenants]  # fmt: skip
    plans = [{"org_slug": t, "plan": "enterprise", "max_runs_per_day": 10_000, "max_concurrent_runs": 100,
              "max_templates": 500, "created_at": now} for t in tenants]  # fmt: skip
    for start in range(0, count, 2000):
        wh.insert_rows(rt.settings.control_dataset, "org_profiles", profiles[start : start + 2000])
        wh.insert_rows(rt.settings.control_dataset, "org_subscriptions", plans[start : start + 2000])
    # DDL in transactions of 500 tenants: one by one, DuckDB's commit of each CREATE grows with the catalog.
    runs_schema = load_schema("tenant", "pipeline_runs")
    for start in range(0, count, 500):
        statements: list[tuple[str, None]] = []
        for tenant in tenants[start : start + 500]:
            statements.append((f"CREATE SCHEMA {quote_identifier(tenant)}", None))
            statements.append((table_ddl(tenant, runs_schema), None))
        wh.run_atomically(statements)
    _initialise_usage(rt, tenants, control_ref)
    return tenants


def _initialise_usage(rt: Any, tenants: list[str], control_ref: Callable[..., str]) -> None:
    """Usage counters as onboarding creates them, when the quota service keeps any."""
    try:
        from common.services import quotas
    except ImportError:
        return
    initialise = getattr(quotas, "initialise_usage_many", None)
    if initialise is not None:
        initialise(rt, tenants)


@contextmanager
def pubsub_emulator() -> Iterator[str]:
    from convergence.emulators.process import free_port
    from convergence.emulators.pubsub import start_pubsub_emulator

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-pubsub-") as data:
        process = start_pubsub_emulator(port, Path(data) / "data", Path(data) / "emulator.log")
        try:
            yield f"127.0.0.1:{port}"
        finally:
            process.stop()


class StepCounter:
    """Counts step-0 messages that reached the steps topic (a local subscriber, or a pull subscription)."""

    def __init__(self, rt: Any, emulator: str | None) -> None:
        self.rt, self.emulator, self.count = rt, emulator, 0
        self._lock = threading.Lock()
        settings = rt.settings
        if emulator is None:
            rt.bus._subscriptions.clear()  # nothing executes steps or schedules: this bench measures enqueueing
            rt.bus.subscribe(settings.steps_topic, self._local, name="bench-steps")
            self.chunks: list[Any] = []
            rt.bus.subscribe(settings.schedules_topic, self._chunk, name="bench-schedules")
        else:
            from google.cloud import pubsub_v1

            from common.bus.pubsub import subscriber_client, topic_path

            publisher = pubsub_v1.PublisherClient(client_options={"api_endpoint": emulator},
                                                  credentials=_anonymous())  # fmt: skip
            self.subscriber = subscriber_client(emulator)
            self.paths = {}
            for topic in (settings.steps_topic, settings.schedules_topic):
                publisher.create_topic(name=topic_path(settings.gcp_project_id, topic))
                sub = f"projects/{settings.gcp_project_id}/subscriptions/bench-{topic}"
                self.subscriber.create_subscription(
                    name=sub, topic=topic_path(settings.gcp_project_id, topic)
                )
                self.paths[topic] = sub

    def _local(self, event: Any) -> None:
        with self._lock:
            self.count += 1

    def _chunk(self, event: Any) -> None:
        from common.bus.messages import ScheduleMessage, decode_event

        message, _attributes, _attempt = decode_event(event, ScheduleMessage)
        with self._lock:
            self.chunks.append(message)

    def take_chunks(self, expected: int) -> list[Any]:
        """The `expected` chunk messages the fan-out published (pulled from the emulator, or collected locally)."""
        if self.emulator is None:
            self.rt.bus.drain(60)
            taken, self.chunks = self.chunks, []
            return taken
        from common.bus.messages import ScheduleMessage

        pulled = self._pull(self.rt.settings.schedules_topic, expected=expected)
        return [ScheduleMessage.model_validate_json(data) for data in pulled]

    def _pull(self, topic: str, idle_rounds: int = 3, expected: int | None = None) -> list[bytes]:
        found: list[bytes] = []
        idle = 0
        while idle < idle_rounds and (expected is None or len(found) < expected):
            response = self.subscriber.pull(subscription=self.paths[topic], max_messages=1000, timeout=10)
            if not response.received_messages:
                idle += 1
                continue
            idle = 0
            found.extend(m.message.data for m in response.received_messages)
            self.subscriber.acknowledge(subscription=self.paths[topic],
                                        ack_ids=[m.ack_id for m in response.received_messages])  # fmt: skip
        return found

    def arrived(self) -> int:
        if self.emulator is None:
            self.rt.bus.drain(120)
            return self.count
        self.count += len(self._pull(self.rt.settings.steps_topic))
        return self.count


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def measure_fanout(rt: Any, counter: StepCounter, day: str) -> tuple[float, float, int]:
    """(seconds to enqueue every step 0, peak RSS MiB, step messages that arrived)."""
    from common.bus.messages import ScheduleMessage
    from common.services import fanout

    message = ScheduleMessage(template="gcp/example/dryrun", tenants="*", parameters={"date": day},
                              trigger_by="bench", schedule_id="bench", due_at=f"{day}T06:00:00Z")  # fmt: skip
    before = counter.arrived()
    with PeakRss() as memory:
        started = time.perf_counter()
        fanned = fanout.fan_out(rt, message)
        for chunk in counter.take_chunks(fanned["chunks"]):
            fanout.start_chunk(rt, chunk)
        elapsed = time.perf_counter() - started
    return elapsed, memory.peak_mib, counter.arrived() - before


def measure_baseline(rt: Any, counter: StepCounter, tenants: list[str], day: str) -> tuple[float, float, int]:
    """The naive loop: one start_run and one publish per tenant, each waiting for the bus."""
    from common.services import pipelines

    before = counter.arrived()
    with PeakRss() as memory:
        started = time.perf_counter()
        for tenant in tenants:
            pipelines.start_run(rt, tenant, "gcp", "example", "dryrun", {"date": day, "trigger_by": "bench"},
                                trigger_type="bulk")  # fmt: skip
        elapsed = time.perf_counter() - started
    return elapsed, memory.peak_mib, counter.arrived() - before


def run_bus(bus: str, tenants_wanted: int, chunk_size: int) -> list[dict[str, Any]]:
    from common.wiring import get_runtime

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as home, _maybe_emulator(bus) as emulator:
        _environment(Path(home), "local" if bus == "local" else "pubsub", emulator)
        os.environ["FANOUT_CHUNK_SIZE"] = str(chunk_size)
        from common.settings import reset_settings

        reset_settings()
        rt = get_runtime()
        counter = StepCounter(rt, emulator)
        started = time.perf_counter()
        tenants = seed_tenants(rt, tenants_wanted)
        console.print(
            f"[dim]{bus}: {len(tenants):,} tenants onboarded in {time.perf_counter() - started:.1f} s[/dim]"
        )
        rows = []
        for name, measure in (
            ("fan-out (chunks + batched publish)", lambda: measure_fanout(rt, counter, "2026-01-01")),
            (
                "baseline (one publish at a time)",
                lambda: measure_baseline(rt, counter, tenants, "2026-01-02"),
            ),
        ):
            seconds, peak, arrived = measure()
            rows.append({"bus": bus, "variant": name, "seconds": seconds, "peak_mib": peak, "messages": arrived,
                         "per_second": arrived / seconds if seconds else 0.0})  # fmt: skip
        rt.bus.close()
        return rows


@contextmanager
def _maybe_emulator(bus: str) -> Iterator[str | None]:
    if bus == "pubsub":
        with pubsub_emulator() as host:
            yield host
    else:
        yield None


def main(
    tenants: int = typer.Option(10_000, min=1, help="Tenants to onboard and fan out to."),
    chunk_size: int = typer.Option(500, min=1, max=5000, help="FANOUT_CHUNK_SIZE."),
    bus: str = typer.Option("both", help="local, pubsub or both."),
) -> None:
    """Print the fan-out figures beside the naive baseline, per bus."""
    buses = ["local", "pubsub"] if bus == "both" else [bus]
    rows: list[dict[str, Any]] = []
    for name in buses:
        rows.extend(run_bus(name, tenants, chunk_size))
    table = Table(
        title=f"One scheduled run to {tenants:,} tenants (chunks of {chunk_size}), DuckDB warehouse"
    )
    for column in (
        "bus",
        "variant",
        "s to enqueue all step 0",
        "messages",
        "messages/s",
        "peak RSS MiB",
        "speed-up",
    ):
        table.add_column(column, justify="left" if column in ("bus", "variant") else "right")
    for row in rows:
        baseline = next(r for r in rows if r["bus"] == row["bus"] and r["variant"].startswith("baseline"))
        ratio = baseline["seconds"] / row["seconds"] if row["seconds"] else 0.0
        table.add_row(row["bus"], row["variant"], f"{row['seconds']:.1f}", f"{row['messages']:,}",
                      f"{row['per_second']:,.0f}", f"{row['peak_mib']:.0f}", f"{ratio:.2f}x")  # fmt: skip
    console.print(table)
