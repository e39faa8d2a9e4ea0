"""Fan-out benchmark: one scheduled run to N onboarded tenants, on the local bus and the Pub/Sub emulator.

For each bus it measures, in one process and one warehouse (DuckDB):
- **fan-out**: the schedules message for "*" split into chunk messages, each chunk starting its tenants' runs
  and publishing their step-0 messages in one batch (what the trigger function does);
- **redelivery**: every chunk delivered again (Pub/Sub is at-least-once): no run may start twice;
- **baseline**: the naive loop, one start_run + one publish (waiting for it) per tenant, timed on a sample of
  `--baseline-sample` tenants and extrapolated linearly to N (said so in the table).
It prints seconds until every step-0 message is published, messages per second, the peak resident memory of
the phase (this process, and the process tree: the Pub/Sub emulator's JVM is a child), and the ratio. Steps
are not executed: the steps topic only counts what arrives. Tenants are onboarded the fast way (control rows
plus a dataset with the tenant tables each) so setup stays in minutes.

Then **onboarding**: with 1k, 5k and 10k tenants present (the fast way), `--onboard-sample` organisations are
onboarded one by one through `onboarding.onboard` (embedded mode, DuckDB), and the seconds per 1,000 at that
size are printed: flat figures mean onboarding grows linearly.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import typer
from rich.console import Console
from rich.table import Table

console = Console()
ROOT_KEY = "bench-root-key-0123456789abcdef"


def _rss(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """This process's children, their children, ... (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, queue = [], [root]
    while queue:
        children = parents.get(queue.pop(), [])
        found.extend(children)
        queue.extend(children)
    return found


class PeakRss:
    """Samples resident memory (VmRSS) of this process and of its process tree; peaks of the sampled phase."""

    def __init__(self) -> None:
        self.peak = self.tree_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = 0
        self._children: list[int] = []

    def _sample(self) -> None:
        own = _rss("self")
        if self._tick % 25 == 0:  # the tree is walked every half second; its members' RSS every 20 ms
            self._children = _descendants(os.getpid())
        self._tick += 1
        self.peak = max(self.peak, own)
        self.tree_peak = max(self.tree_peak, own + sum(_rss(pid) for pid in self._children))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.02)

    def __enter__(self) -> Self:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def tree_peak_mib(self) -> float:
        return self.tree_peak / 2**20


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


def seed_tenants(rt: Any, count: int, *, first: int = 0) -> list[str]:
    """`count` active tenants on the enterprise plan (numbered from `first`), each with its dataset and tables."""
    from common.contracts.onboarding import BootstrapRequest
    from common.metadata.control_dataset import control_ref
    from common.metadata.schemas import load_schema
    from common.services import onboarding
    from common.warehouse.duckdb import table_ddl
    from common.warehouse.sql import quote_identifier

    onboarding.bootstrap(rt, BootstrapRequest())
    now = dt.datetime.now(dt.UTC)
    tenants = [f"bench_{i:05d}" for i in range(first, first + count)]
    wh = rt.warehouse
    profiles = [{"org_slug": t, "company_name": t, "admin_email": f"{t}@example.com", "subscription_plan": "enterprise",
                 "status": "ACTIVE", "dataset_id": t, "created_at": now, "updated_at": now} for t in tenants]  # fmt: skip
    plans = [{"org_slug": t, "plan": "enterprise", "max_runs_per_day": 10_000, "max_concurrent_runs": 100,
              "max_templates": 500, "created_at": now} for t in tenants]  # fmt: skip
    for start in range(0, count, 2000):
        wh.insert_rows(rt.settings.control_dataset, "org_profiles", profiles[start : start + 2000])
        wh.insert_rows(rt.settings.control_dataset, "org_subscriptions", plans[start : start + 2000])
    # DDL in transactions of 500 tenants: one by one, DuckDB's commit of each CREATE grows with the catalog.
    schemas = [load_schema("tenant", name) for name in ("pipeline_runs", "step_logs", "dq_results")]
    for start in range(0, count, 500):
        statements: list[tuple[str, None]] = []
        for tenant in tenants[start : start + 500]:
            statements.append((f"CREATE SCHEMA {quote_identifier(tenant)}", None))
            statements.extend((table_ddl(tenant, schema), None) for schema in schemas)
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


def measure_fanout(rt: Any, counter: StepCounter, day: str) -> dict[str, Any]:
    """Seconds to enqueue every step 0, peak RSS, step messages that arrived, and runs recorded."""
    from common.bus.messages import ScheduleMessage
    from common.services import fanout

    message = ScheduleMessage(template="gcp/example/dryrun", tenants="*", parameters={"date": day},
                              trigger_by="bench", schedule_id="bench", due_at=f"{day}T06:00:00Z")  # fmt: skip
    before = counter.arrived()
    outcome: Counter[str] = Counter()
    with PeakRss() as memory:
        started = time.perf_counter()
        fanned = fanout.fan_out(rt, message)
        chunks = counter.take_chunks(fanned["chunks"])
        for chunk in chunks:
            outcome.update(fanout.start_chunk(rt, chunk))
        elapsed = time.perf_counter() - started
    arrived = counter.arrived() - before
    with PeakRss() as again_memory:
        started = time.perf_counter()
        again: Counter[str] = Counter()
        for chunk in chunks:  # Pub/Sub redelivers: the same chunks once more
            again.update(fanout.start_chunk(rt, chunk))
        again_elapsed = time.perf_counter() - started
    return {"seconds": elapsed, "peak": memory, "messages": arrived, "outcome": outcome,
            "again_seconds": again_elapsed, "again_peak": again_memory, "again": again,
            "again_messages": counter.arrived() - before - arrived}  # fmt: skip


def measure_baseline(
    rt: Any, counter: StepCounter, tenants: list[str], day: str
) -> tuple[float, PeakRss, int]:
    """The naive loop: one start_run and one publish per tenant, each waiting for the bus."""
    from common.services import pipelines

    before = counter.arrived()
    with PeakRss() as memory:
        started = time.perf_counter()
        for tenant in tenants:
            pipelines.start_run(rt, tenant, "gcp", "example", "dryrun", {"date": day, "trigger_by": "bench"},
                                trigger_type="bulk")  # fmt: skip
        elapsed = time.perf_counter() - started
    return elapsed, memory, counter.arrived() - before


def runs_recorded(rt: Any, tenants: list[str]) -> int:
    """PENDING records of the bench's template in all tenants' pipeline_runs (one query per 500 tenants)."""
    from common.warehouse.sql import table_ref

    total = 0
    for start in range(0, len(tenants), 500):
        union = " UNION ALL ".join(
            f"SELECT pipeline_logging_id FROM {table_ref(t, 'pipeline_runs')} WHERE status = 'PENDING'"
            for t in tenants[start : start + 500]
        )
        total += int(rt.warehouse.query(f"SELECT COUNT(*) AS n FROM ({union}) AS runs")[0]["n"])
    return total


def run_bus(bus: str, tenants_wanted: int, chunk_size: int, baseline_sample: int) -> list[dict[str, Any]]:
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
        fanned = measure_fanout(rt, counter, "2026-01-01")
        recorded = runs_recorded(rt, tenants)
        console.print(
            f"[dim]{bus}: fan-out {dict(fanned['outcome'])}; redelivered {dict(fanned['again'])} in"
            f" {fanned['again_seconds']:.1f} s (peak RSS {fanned['again_peak'].peak_mib:.0f} MiB),"
            f" {fanned['again_messages']:,} step messages again; {recorded:,} runs recorded for"
            f" {len(tenants):,} tenants[/dim]"
        )
        sample = tenants[: min(baseline_sample, len(tenants))]
        seconds, memory, arrived = measure_baseline(rt, counter, sample, "2026-01-02")
        scale = len(tenants) / len(sample)
        rows = [
            {"bus": bus, "variant": "fan-out (chunks + batched publish)", "seconds": fanned["seconds"],
             "peak": fanned["peak"], "messages": fanned["messages"],
             "per_second": fanned["messages"] / fanned["seconds"] if fanned["seconds"] else 0.0},
            {"bus": bus, "variant": f"baseline (one publish at a time), {len(sample):,} timed x {scale:.0f}",
             "seconds": seconds * scale, "peak": memory, "messages": arrived,
             "per_second": arrived / seconds if seconds else 0.0},
        ]  # fmt: skip
        rt.bus.close()
        return rows


@contextmanager
def _maybe_emulator(bus: str) -> Iterator[str | None]:
    if bus == "pubsub":
        with pubsub_emulator() as host:
            yield host
    else:
        yield None


def measure_onboarding(sizes: list[int], sample: int, budget: float) -> list[dict[str, Any]]:
    """Seconds per 1,000 one-by-one onboardings with `size` tenants present, for each size (one warehouse)."""
    from common.contracts.onboarding import OnboardRequest
    from common.services import onboarding
    from common.wiring import get_runtime

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-onboard-") as home:
        _environment(Path(home), "local", None)
        rt = get_runtime()
        rt.bus._subscriptions.clear()  # onboarding runs its dry run in-process; nothing else consumes
        present = 0
        for size in sizes:
            if size > present:
                seed_tenants(rt, size - present, first=present)
                present = size
            done, started = 0, time.perf_counter()
            while done < sample and time.perf_counter() - started < budget:
                org = f"onboard_{size:05d}_{done:04d}"
                onboarding.onboard(rt, OnboardRequest(org_slug=org, company_name=org,
                                                      admin_email=f"{org}@example.com"))  # fmt: skip
                done += 1
            elapsed = time.perf_counter() - started
            present += done
            rows.append(
                {"size": size, "onboarded": done, "seconds": elapsed, "per_1000": elapsed / done * 1000}
            )
        rt.bus.close()
    return rows


def main(
    tenants: int = typer.Option(10_000, min=1, help="Tenants to onboard and fan out to."),
    chunk_size: int = typer.Option(500, min=1, max=5000, help="FANOUT_CHUNK_SIZE."),
    bus: str = typer.Option("both", help="local, pubsub or both."),
    baseline_sample: int = typer.Option(
        500, min=1, help="Tenants the naive loop is timed on (then scaled to N)."
    ),
    onboard_sample: int = typer.Option(
        100, min=0, help="Organisations onboarded one by one at each size (0: skip)."
    ),
    onboard_budget: float = typer.Option(60.0, min=1, help="Seconds at most spent onboarding at each size."),
) -> None:
    """Print the fan-out figures beside the naive baseline, per bus; then onboarding's seconds per 1,000."""
    buses = ["local", "pubsub"] if bus == "both" else [bus]
    rows: list[dict[str, Any]] = []
    for name in buses:
        rows.extend(run_bus(name, tenants, chunk_size, baseline_sample))
    table = Table(
        title=f"One scheduled run to {tenants:,} tenants (chunks of {chunk_size}), DuckDB warehouse"
    )
    for column in (
        "bus",
        "variant",
        "s to enqueue all step 0",
        "messages",
        "messages/s",
        "peak RSS MiB (process / tree)",
        "speed-up",
    ):
        table.add_column(column, justify="left" if column in ("bus", "variant") else "right")
    for row in rows:
        baseline = next(r for r in rows if r["bus"] == row["bus"] and r["variant"].startswith("baseline"))
        ratio = baseline["seconds"] / row["seconds"] if row["seconds"] else 0.0
        memory = row["peak"]
        table.add_row(row["bus"], row["variant"], f"{row['seconds']:.1f}", f"{row['messages']:,}",
                      f"{row['per_second']:,.0f}", f"{memory.peak_mib:.0f} / {memory.tree_peak_mib:.0f}",
                      f"{ratio:.2f}x")  # fmt: skip
    console.print(table)
    if onboard_sample:
        sizes = [size for size in (1_000, 5_000, 10_000) if size <= max(tenants, 1_000)]
        onboarded = measure_onboarding(sizes, onboard_sample, onboard_budget)
        table = Table(title="Onboarding one by one (embedded mode, DuckDB), with N tenants already present")
        for column in ("tenants present", "onboarded one by one", "seconds", "s per 1,000 tenants"):
            table.add_column(column, justify="right")
        for row in onboarded:
            table.add_row(f"{row['size']:,}", f"{row['onboarded']:,}", f"{row['seconds']:.1f}",
                          f"{row['per_1000']:.1f}")  # fmt: skip
        console.print(table)
