"""Quota model: a day's pipelines for a sample of tenants on bqemulator, counted, then scaled to a platform.

It runs what `convergence demo` runs — two tenants onboarded, every provider's pipeline (Google Cloud billing
export, AWS CUR, Azure export, OpenAI and Anthropic cost APIs) — in emulators mode: the official BigQuery
client against bqemulator, the official Cloud KMS client against the local stand-in (no KMS emulator
exists), claims in a local store, the in-process bus. An instrumented adapter counts, per run:

- BigQuery jobs by kind: load, query (SELECT), DML (INSERT / UPDATE / DELETE / MERGE), DDL, script
  (transactions), copy; table modifications per table (loads, copies and queries writing a table);
  mutating DML per table; Storage Write API appends and bytes; the bytes each query would be billed;
- Cloud KMS requests; Pub/Sub messages and bytes; claim writes (Cloud Storage Class A operations);

then a scheduled fan-out of one template to the sample tenants, for the constant cost of a chunk. It prints,
for TENANTS x PIPELINES daily runs, each daily figure beside the published Google Cloud quota it must fit,
and the platform's own BigQuery cost per tenant-month at on-demand prices. The quotas and prices are Google
Cloud's published defaults (docs/scaling.md names each and the assumptions of the model).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import sqlglot
import typer
from rich.console import Console
from rich.table import Table
from sqlglot import expressions as exp

console = Console(width=150)
ROOT_KEY = "bench-root-key-0123456789abcdef"
KMS_KEY = "projects/quota-bench/locations/us/keyRings/convergence/cryptoKeys/tenant-keysets"
MB = 1_000_000
TIB = 2**40

# Published defaults (cloud.google.com/bigquery/quotas, /kms/quotas, /pubsub/quotas, /bigquery/pricing).
LOAD_JOBS_PER_DAY = 100_000  # per project, failures included
TABLE_MODIFICATIONS_PER_DAY = 1_500  # per table: load, copy and query jobs writing it (DML is not counted)
MUTATING_DML_CONCURRENT = 2  # per table; 20 more queue
DML_SECONDS = 2.0  # model: a small mutating statement holds its table's slot this long
CONCURRENT_QUERIES = 100  # interactive queries per project
STORAGE_WRITE_BYTES_PER_SECOND = 300 * MB  # regional (3 GB/s in the US and EU multi-regions)
STORAGE_WRITE_CONNECTIONS = 1_000  # concurrent, regional (10,000 in the multi-regions)
KMS_REQUESTS_PER_MINUTE = 60_000  # cryptographic requests per project and region
PUBSUB_PUBLISH_BYTES_PER_SECOND = 200 * MB  # publisher throughput of a small region (4 GB/s in large ones)
MIN_BILLED_BYTES = 10 * MB  # on-demand: at least 10 MB per table referenced by a query
PRICE_PER_TIB = 6.25  # USD, on-demand queries
STORAGE_WRITE_PRICE_PER_GIB = 0.025  # USD, Storage Write API ingestion (2 TiB a month free)
FUNCTION_INSTANCES = 4 * 10  # Terraform default: four functions, at most 10 instances of 1 request each


@dataclass
class Counts:
    """What one phase cost."""

    jobs: Counter[str] = field(default_factory=Counter)
    modifications: Counter[str] = field(default_factory=Counter)  # per table: load / copy / query writes
    mutating_dml: Counter[str] = field(default_factory=Counter)  # per table: UPDATE / DELETE / MERGE
    billed_bytes: int = 0
    appends: int = 0
    append_bytes: int = 0
    kms: int = 0
    messages: int = 0
    message_bytes: int = 0
    claim_writes: int = 0

    def minus(self, before: Counts) -> Counts:
        return Counts(
            self.jobs - before.jobs, self.modifications - before.modifications,
            self.mutating_dml - before.mutating_dml, self.billed_bytes - before.billed_bytes,
            self.appends - before.appends, self.append_bytes - before.append_bytes, self.kms - before.kms,
            self.messages - before.messages, self.message_bytes - before.message_bytes,
            self.claim_writes - before.claim_writes,
        )  # fmt: skip

    def copy(self) -> Counts:
        return self.minus(Counts())


def _classify(sql: str) -> tuple[str, list[str], list[str]]:
    """(kind, tables it writes, tables it references) of a GoogleSQL statement or script."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    except sqlglot.errors.ParseError:
        return "query", [], []
    kinds = {type(s).__name__ for s in statements}
    referenced = sorted({_name(t) for s in statements for t in s.find_all(exp.Table)})
    if len(statements) > 1 or kinds & {"Transaction", "Commit", "Rollback"}:
        return "script", [], referenced
    (statement,) = statements
    if isinstance(statement, exp.Insert | exp.Update | exp.Delete | exp.Merge):
        target = statement.this.find(exp.Table) if statement.this is not None else None
        kind = "dml_insert" if isinstance(statement, exp.Insert) else "dml_mutating"
        return kind, [_name(target)] if target is not None else [], referenced
    if isinstance(statement, exp.Create | exp.Drop | exp.Alter):
        return "ddl", [], referenced
    return "query", [], referenced


def _name(table: exp.Table) -> str:
    dataset = table.db or ""
    # Tenant datasets are many copies of one shape: count a tenant table by its name.
    shared = dataset in {"organizations"}
    return f"{dataset}.{table.name}" if shared else f"<tenant>.{table.name}"


class Instruments:
    """Wraps a runtime's adapters to count what reaches BigQuery, KMS, the bus and the claims store."""

    def __init__(self, rt: Any, kms_standin: Any) -> None:
        self.counts = Counts()
        self._kms = kms_standin
        wh = rt.warehouse
        self._wrap(wh, "_query_job", self._query_job)
        self._wrap(wh, "_load", self._load)
        self._wrap(wh.writer, "append", self._append)
        self.watch_bus(rt.bus)
        self._wrap(rt.claims, "write", self._claim_write)

    def watch_bus(self, bus: Any) -> None:
        self._wrap(bus, "publish", self._publish)

    @staticmethod
    def _wrap(target: Any, name: str, wrapper: Callable[..., Any]) -> None:
        original = getattr(target, name)
        setattr(target, name, lambda *a, **k: wrapper(original, *a, **k))

    def snapshot(self) -> Counts:
        self.counts.kms = self._kms.count()
        return self.counts.copy()

    def _query_job(self, original: Callable[..., Any], sql: str, *args: Any, **kwargs: Any) -> Any:
        kind, written, referenced = _classify(sql)
        c = self.counts
        c.jobs[kind] += 1
        for table in written:
            if kind == "dml_mutating":
                c.mutating_dml[table] += 1
        job, result = original(sql, *args, **kwargs)
        if kind != "ddl":
            processed = int(getattr(job, "total_bytes_processed", 0) or 0)
            c.billed_bytes += max(processed, MIN_BILLED_BYTES * max(1, len(referenced)))
        return job, result

    def _load(self, original: Callable[..., Any], destination: Any, payload: bytes, config: Any) -> Any:
        self.counts.jobs["load"] += 1
        table = destination.table_id
        name = f"organizations.{table}" if destination.dataset_id == "organizations" else f"<tenant>.{table}"
        self.counts.modifications[name] += 1
        return original(destination, payload, config)

    def _append(self, original: Callable[..., Any], table: Any, batch: Any) -> Any:
        self.counts.appends += 1
        self.counts.append_bytes += batch.nbytes  # the Arrow rows, about what BigQuery bills as ingested
        return original(table, batch)

    def _publish(self, original: Callable[..., Any], topic: str, message: Any, attributes: Any = None) -> Any:
        self.counts.messages += 1
        self.counts.message_bytes += len(message.model_dump_json())
        return original(topic, message, attributes)

    def _claim_write(self, original: Callable[..., Any], key: str, record: Any, **kwargs: Any) -> Any:
        self.counts.claim_writes += 1
        return original(key, record, **kwargs)


def _runtime(home: Path, bigquery: str, replay_base: str, kms_endpoint: str) -> Any:
    os.environ.update({
        "CONVERGENCE_HOME": str(home), "CA_ROOT_API_KEY": ROOT_KEY, "CONVERGENCE_WAREHOUSE": "bigquery",
        "BIGQUERY_EMULATOR_HOST": bigquery, "GCP_PROJECT_ID": "quota-bench",
    })  # fmt: skip
    from common.crypto.gcp_kms import GcpKmsKeyring
    from common.metadata.keysets import WarehouseKeysetStore
    from common.settings import get_settings, reset_settings
    from common.warehouse.bigquery import BigQueryWarehouse
    from common.wiring import build_runtime, set_runtime

    reset_settings()
    settings = get_settings().model_copy(
        update={"openai_api_base": replay_base, "anthropic_api_base": replay_base}
    )
    rt = build_runtime(settings)
    assert isinstance(rt.warehouse, BigQueryWarehouse), "the quota model runs on the BigQuery adapter"
    rt.keyring = GcpKmsKeyring(
        KMS_KEY,
        WarehouseKeysetStore(rt.warehouse, settings.control_dataset, rt.claims),
        endpoint=kms_endpoint,
    )
    set_runtime(rt)
    return rt


@dataclass
class Measured:
    onboarding: Counts  # the sample's onboardings, together
    runs: Counts  # the sample's daily runs, together, on their second day (tables and references in place)
    run_count: int
    tenant_count: int
    chunk: Counts  # one fan-out chunk of the sample
    seconds: float


def _complete(runs: list[Any]) -> list[Any]:
    failed = [(r.path, r.status) for r in runs if r.status != "COMPLETE"]
    if failed:
        raise RuntimeError(f"runs did not complete: {failed}")
    return runs


def measure(days: int) -> Measured:
    from common.bus.local import LocalBus
    from common.bus.messages import ScheduleMessage
    from common.services import fanout
    from common.wiring import reset_runtime
    from convergence.demo.api import DemoApi
    from convergence.demo.provider_apis import ProviderApiServer
    from convergence.demo.run import _run_waves
    from convergence.demo.tenants import prepare_acme, prepare_globex
    from convergence.emulators.bigquery import start_bigquery_emulator
    from convergence.emulators.kms_standin import start_kms_standin
    from convergence.emulators.process import free_port_pair

    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="convergence-quota-"))
    port = free_port_pair()
    emulator = start_bigquery_emulator(
        port, folder / "bqemulator", folder / "bqemulator.log", persistent=False
    )
    standin = start_kms_standin(keys=(KMS_KEY,))
    try:
        with ProviderApiServer() as replay:
            rt = _runtime(folder / "home", f"http://127.0.0.1:{port}", replay.base_url, standin.endpoint)
            meter = Instruments(rt, standin)
            api = DemoApi(rt)
            api.bootstrap()
            before = meter.snapshot()
            start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
            plans = [prepare_acme(api, replay, start, days), prepare_globex(api)]
            onboarded = meter.snapshot()
            _complete(_run_waves(api, plans))  # the first day creates tables and loads reference data
            warm = meter.snapshot()
            for plan in plans:  # the same pipelines again: a day of an established tenant
                plan.waves = [[replace(run, run_id="", view={}) for run in wave] for wave in plan.waves]
            runs = _complete(_run_waves(api, plans))
            ran = meter.snapshot()
            tenants = [plan.org for plan in plans]
            message = ScheduleMessage(template="gcp/example/dryrun", tenants=tenants, trigger_by="scheduler",
                                      trigger_type="schedule", schedule_id="quota-bench",
                                      due_at=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat())  # fmt: skip
            # Only the chunk's own work: its step-0 messages go to a bus that runs nothing.
            rt.bus.close()
            rt.bus = LocalBus(rt.settings.gcp_project_id)
            meter.watch_bus(rt.bus)
            fanout.start_for_tenants(rt, message)
            chunk = meter.snapshot().minus(ran)
            reset_runtime()
    finally:
        standin.stop()
        emulator.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return Measured(onboarded.minus(before), ran.minus(warm), len(runs), len(plans), chunk,
                    time.monotonic() - started)  # fmt: skip


def _row(
    table: Table, figure: str, daily: float, quota: float | None, unit: str, note: str = ""
) -> dict[str, Any]:
    share = daily / quota if quota else None
    cells = [figure, f"{daily:,.0f}" if daily >= 10 else f"{daily:,.2f}", unit,
             f"{quota:,.0f}" if quota else "—", f"{share:.1%}" if share is not None else "—", note]  # fmt: skip
    style = None if share is None or share < 0.5 else "bold red"
    table.add_row(*cells, style=style)
    return {"value": daily, "unit": unit, "baseline": quota, "ratio": share}


def main(
    tenants: Annotated[int, typer.Option(help="Tenants the platform serves.")] = 10_000,
    pipelines: Annotated[int, typer.Option(help="Daily pipelines per tenant.")] = 6,
    days: Annotated[
        int, typer.Option(help="Days of Google Cloud, OpenAI and Anthropic costs per sample run.")
    ] = 1,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
) -> None:
    m = measure(days)
    per_run = m.runs
    n = m.run_count
    runs_per_day = tenants * pipelines
    chunks_per_day = pipelines * math.ceil(tenants / 500)

    def daily(value: float, per_chunk: float = 0.0) -> float:
        return value / n * runs_per_day + per_chunk * chunks_per_day

    console.print(
        f"Measured on bqemulator: {m.tenant_count} tenants onboarded, {n} runs of every provider's pipeline,"
        f" one fan-out chunk; {m.seconds:.0f} s.",
        soft_wrap=True,
    )
    detail = Table(title="per run (average of the sample) and per fan-out chunk")
    for column in ("figure", "per run", "per chunk", "per onboarding"):
        detail.add_column(column, justify="right" if column != "figure" else "left")
    for kind in ("load", "query", "dml_insert", "dml_mutating", "ddl", "script"):
        detail.add_row(f"BigQuery {kind} jobs", f"{per_run.jobs[kind] / n:.1f}", str(m.chunk.jobs[kind]),
                       f"{m.onboarding.jobs[kind] / m.tenant_count:.1f}")  # fmt: skip
    detail.add_row("Storage Write appends", f"{per_run.appends / n:.1f}", str(m.chunk.appends),
                   f"{m.onboarding.appends / m.tenant_count:.1f}")  # fmt: skip
    detail.add_row("bytes billed (MB)", f"{per_run.billed_bytes / n / MB:.0f}", f"{m.chunk.billed_bytes / MB:.0f}",
                   f"{m.onboarding.billed_bytes / m.tenant_count / MB:.0f}")  # fmt: skip
    detail.add_row(
        "KMS requests", f"{per_run.kms / n:.1f}", str(m.chunk.kms), f"{m.onboarding.kms / m.tenant_count:.1f}"
    )
    detail.add_row("Pub/Sub messages", f"{per_run.messages / n:.1f}", str(m.chunk.messages),
                   f"{m.onboarding.messages / m.tenant_count:.1f}")  # fmt: skip
    detail.add_row("claim writes (Cloud Storage)", f"{per_run.claim_writes / n:.1f}", str(m.chunk.claim_writes),
                   f"{m.onboarding.claim_writes / m.tenant_count:.1f}")  # fmt: skip
    console.print(detail)
    loads = ", ".join(f"{t} {v / n:.1f}" for t, v in per_run.modifications.most_common(8))
    console.print(f"load jobs per run by table: {loads or 'none'}", soft_wrap=True)

    table = Table(title=f"{tenants:,} tenants x {pipelines} daily pipelines = {runs_per_day:,} runs a day")
    for column in ("figure", "daily", "unit", "quota", "share", "how"):
        table.add_column(column, justify="left" if column in {"figure", "how", "unit"} else "right")
    figures: dict[str, Any] = {}
    loads = daily(per_run.jobs["load"], m.chunk.jobs["load"])
    figures["load_jobs_per_day"] = _row(
        table, "load jobs", loads, LOAD_JOBS_PER_DAY, "jobs/day", "per project"
    )
    shared = {
        t: v
        for t, v in (per_run.modifications + m.chunk.modifications).items()
        if t.startswith("organizations.")
    }
    tenant_tables = {t: v for t, v in per_run.modifications.items() if t.startswith("<tenant>.")}
    worst_shared = max(shared.items(), key=lambda kv: kv[1], default=("none", 0))
    shared_daily = daily(per_run.modifications[worst_shared[0]], m.chunk.modifications[worst_shared[0]])
    figures["shared_table_modifications_per_day"] = _row(
        table,
        f"modifications of {worst_shared[0]}",
        shared_daily,
        TABLE_MODIFICATIONS_PER_DAY,
        "per table/day",
        "the busiest table every tenant shares",
    )
    worst_tenant = max(tenant_tables.items(), key=lambda kv: kv[1], default=("none", 0))
    tenant_daily = (
        per_run.modifications[worst_tenant[0]] / n * pipelines / max(1, m.tenant_count) * m.tenant_count
    )
    figures["tenant_table_modifications_per_day"] = _row(
        table,
        f"modifications of {worst_tenant[0]}",
        tenant_daily,
        TABLE_MODIFICATIONS_PER_DAY,
        "per table/day",
        "one tenant's busiest table",
    )
    mutating = per_run.mutating_dml + m.chunk.mutating_dml
    worst_dml = max(
        (t for t in mutating if t.startswith("organizations.")), key=lambda t: mutating[t], default=None
    )
    dml_daily = daily(per_run.mutating_dml[worst_dml], m.chunk.mutating_dml[worst_dml]) if worst_dml else 0.0
    dml_capacity = MUTATING_DML_CONCURRENT * 86_400 / DML_SECONDS
    figures["shared_mutating_dml_per_day"] = _row(
        table,
        f"mutating DML on {worst_dml or 'shared tables'}",
        dml_daily,
        dml_capacity,
        "statements/day",
        f"{MUTATING_DML_CONCURRENT} at a time x {DML_SECONDS:.0f} s each",
    )
    figures["concurrent_queries"] = _row(
        table,
        "concurrent queries (bound)",
        FUNCTION_INSTANCES,
        CONCURRENT_QUERIES,
        "queries",
        "one query at a time per function instance",
    )
    write_rate = daily(per_run.append_bytes, m.chunk.append_bytes) / 3600
    figures["storage_write_bytes_per_second"] = _row(
        table,
        "Storage Write throughput",
        write_rate,
        STORAGE_WRITE_BYTES_PER_SECOND,
        "bytes/s",
        "a day's appends in one hour",
    )
    figures["storage_write_connections"] = _row(
        table,
        "Storage Write connections (bound)",
        FUNCTION_INSTANCES * 3,
        STORAGE_WRITE_CONNECTIONS,
        "connections",
        "one per record table per instance",
    )
    # A warm instance decrypts from its cache (the sample measures that); bound each run at one unwrap of its
    # tenant's keyset, as on an instance that has not served the tenant yet.
    kms_per_minute = daily(max(per_run.kms, n), m.chunk.kms) / 60
    figures["kms_requests_per_minute"] = _row(
        table,
        "Cloud KMS requests",
        kms_per_minute,
        KMS_REQUESTS_PER_MINUTE,
        "per minute",
        "a day's runs in one hour, each on a cold instance",
    )
    publish_rate = daily(per_run.message_bytes, m.chunk.message_bytes) / 3600
    figures["pubsub_publish_bytes_per_second"] = _row(
        table,
        "Pub/Sub publish throughput",
        publish_rate,
        PUBSUB_PUBLISH_BYTES_PER_SECOND,
        "bytes/s",
        "a day's messages in one hour",
    )
    figures["claim_writes_per_second"] = _row(
        table,
        "claim writes (Cloud Storage)",
        daily(per_run.claim_writes, m.chunk.claim_writes) / 3600,
        1_000,
        "writes/s",
        "a day's claims in one hour; a bucket's initial write rate",
    )
    console.print(table)
    billed_month = (per_run.billed_bytes / n * pipelines + m.chunk.billed_bytes * pipelines / 500) * 30
    query_cost = billed_month / TIB * PRICE_PER_TIB
    write_cost = per_run.append_bytes / n * pipelines * 30 / 2**30 * STORAGE_WRITE_PRICE_PER_GIB
    figures["bigquery_cost_per_tenant_month"] = {"value": query_cost + write_cost, "unit": "USD",
                                                 "baseline": None, "ratio": None}  # fmt: skip
    console.print(
        f"Platform BigQuery cost per tenant-month (on-demand ${PRICE_PER_TIB}/TiB billed, at least 10 MB per table"
        f" a query references; Storage Write ${STORAGE_WRITE_PRICE_PER_GIB}/GiB): ${query_cost + write_cost:.4f}"
        f" ({billed_month / 2**30:.2f} GiB billed)",
        soft_wrap=True,
    )
    over = [name for name, f in figures.items() if f["ratio"] is not None and f["ratio"] >= 0.5]
    console.print(
        "every figure under 50% of its quota" if not over else f"at or over 50% of quota: {', '.join(over)}"
    )
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2))
