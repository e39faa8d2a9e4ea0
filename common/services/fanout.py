"""Fan-out of scheduled and bulk runs: one schedules message starts a template for many tenants, in two levels.

Level 1: a message for `"*"` (every active tenant) or for more tenants than FANOUT_CHUNK_SIZE only splits the
tenant list into chunks and publishes one message per chunk, batched. Level 2: a chunk message starts the
template for each of its tenants (creating each PENDING run without publishing) and then publishes all their
step-0 messages in one batch. No invocation outgrows the event limits: a chunk message holds at most
FANOUT_CHUNK_SIZE tenant ids (500 x 50 characters is ~26 KB of the 512 KB an event may carry), and a chunk
that runs past FANOUT_TIME_BUDGET_SECONDS hands its remaining tenants on in a new message instead of
running into the 9-minute limit.

Pub/Sub delivers at least once, so every message may arrive twice, even to two instances at once. A chunk
is started under a claim (`common.claims`, atomic across instances) named for its request and its tenants:
a delivery finding it held answers 503 `busy` (delivered again later), one finding it done acknowledges.
Runs of a message also share an idempotency key derived from the message (its schedule and slot, its bulk
run, or else its content), so a chunk started again after a failure finds the runs it already started
instead of starting them again; two bulk runs of the same template
and parameters are two requests, keyed by their own bulk_id, so each gets its own runs.

A message with `only_ready` (platform schedules and bulk runs) starts the template only for the tenants that
can run it (`common.services.readiness`); the others are counted `skipped`. A chunk of a bulk run records
what became of each of its tenants (run started, skipped and why, refused and why) in the control dataset in
one statement (`common.metadata.bulk_runs`), which the bulk's status is read from (`common.services.bulk`).
A chunk of a scheduled slot adds its counts (started, skipped with each tenant's reason, refused, handed on)
to the slot's dispatch record (`schedule_dispatch_chunks`, `common.metadata.schedules.slot_outcome`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from common.bus.messages import ScheduleMessage, StepMessage
from common.errors import Conflict, ConvergenceError, DependencyUnavailable
from common.metadata import bulk_runs, organizations, runs
from common.metadata import schedules as schedule_records
from common.runtime import Runtime
from common.services import chunk_starts, readiness
from common.types import as_utc

log = logging.getLogger(__name__)

# A chunk stops starting runs after FANOUT_TIME_BUDGET_SECONDS; enqueueing and its records then take seconds.
CHUNK_LEASE_MARGIN_SECONDS = 120


def idempotency_key(message: ScheduleMessage) -> str:
    """One key per scheduled slot (or per bulk request): the same message never starts a tenant's run twice."""
    if message.bulk_id:
        return f"bulk:{message.bulk_id}"
    if message.schedule_id and message.due_at:
        material: Any = ["slot", message.schedule_id, message.due_at]
    else:
        material = ["bulk", message.template, message.parameters, message.trigger_by, message.trigger_type]
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:40]
    return f"{message.trigger_type}:{digest}"


def chunks(tenants: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(tenants), size):
        yield list(tenants[start : start + size])


def fan_out(rt: Runtime, message: ScheduleMessage) -> dict[str, int]:
    """Level 1: publish one chunk message per FANOUT_CHUNK_SIZE tenants; nothing is started here."""
    size = rt.settings.fanout_chunk_size
    tenants = organizations.active_org_slugs(rt) if message.tenants == "*" else sorted(set(message.tenants))
    parts = [
        message.model_copy(update={"tenants": part, "chunk": index})
        for index, part in enumerate(chunks(tenants, size))
    ]
    if parts:
        rt.bus.publish_many(rt.settings.schedules_topic, parts)
    return {"tenants": len(tenants), "chunks": len(parts)}


def chunk_claim_key(message: ScheduleMessage) -> str:
    """The claim a chunk is started under: its request's idempotency key and its very tenants."""
    assert isinstance(message.tenants, list)
    tenants = hashlib.sha256(json.dumps(sorted(set(message.tenants))).encode()).hexdigest()[:32]
    return f"chunk/{idempotency_key(message)}/{tenants}"


def start_chunk(rt: Runtime, message: ScheduleMessage, *, now: Any = time.monotonic) -> dict[str, int]:
    """Level 2, once across instances: a chunk is started under its claim (`chunk_claim_key`).

    Pub/Sub may hand the same chunk to two instances at once (a redelivery while the first still works on
    it): the second finds the claim held and answers 503 `busy`, so Pub/Sub delivers it again later, when it
    finds the claim done and acknowledges with `already_done` (nothing read, nothing started). A chunk that
    failed frees its claim for the redelivery; one whose instance died is taken over once its lease (the
    time budget and a margin) ran out. Should a claim be gone (claims are kept CLAIM_RETENTION_DAYS), the
    runs' idempotency key still finds what the first delivery started.
    """
    assert isinstance(message.tenants, list)
    key = chunk_claim_key(message)
    claim = rt.claims.acquire(key, lease=rt.settings.fanout_time_budget_seconds + CHUNK_LEASE_MARGIN_SECONDS)
    if claim is None:
        record = rt.claims.inspect(key)
        if record is not None and record.state == "done":
            return {"already_done": len(message.tenants)}
        raise DependencyUnavailable(
            "this chunk is being started by another instance; it is delivered again later", code="busy"
        )
    try:
        outcome = _start_chunk(rt, message, now=now)
    except BaseException:
        rt.claims.release(claim)
        raise
    if not rt.claims.complete(claim, json.dumps(outcome, sort_keys=True)):
        log.warning(
            "chunk %s outlived its lease and was taken over; its runs are found by idempotency key", key
        )
    return outcome


def _start_chunk(rt: Runtime, message: ScheduleMessage, *, now: Any) -> dict[str, int]:
    """Start the template for each tenant of a chunk, then enqueue every step 0 in one batch.

    Tenants that cannot run the template are skipped first when the message asks for it (`only_ready`).
    `chunk_starts.start_runs` admits the chunk's quotas and reads and writes its run records in bulk (a
    bounded number of statements, not some per tenant); when the time budget is spent it stops, and
    the tenants it did not reach are handed on in a new message. A bulk run's chunk then records every
    tenant it dealt with in one statement.
    """
    assert isinstance(message.tenants, list)
    provider, domain, template = message.template.split("/")
    deadline = now() + rt.settings.fanout_time_budget_seconds
    wanted = list(dict.fromkeys(message.tenants))
    active = set(organizations.active_org_slugs(rt, wanted))
    report = BulkReport(message)
    outcome: Counter[str] = Counter(unknown_tenants=len([t for t in wanted if t not in active]))
    for tenant in wanted:
        if tenant not in active:
            report.add(tenant, "FAILED", "not_active", error=f"{tenant} is not an active organisation")
    tenants = [t for t in wanted if t in active]
    skipped: dict[str, str] = {}
    if message.only_ready:
        tenants, skipped = readiness.split_ready(rt, message.template, tenants)
        if skipped:
            outcome["skipped"] = len(skipped)
        for tenant, reason in skipped.items():
            report.add(tenant, "SKIPPED", "skipped", error=reason)
    body = dict(message.parameters) | {"trigger_by": message.trigger_by}
    try:
        started = chunk_starts.start_runs(
            rt, tenants, provider, domain, template, body, trigger_type=message.trigger_type,
            idempotency_key=idempotency_key(message), should_stop=lambda: now() > deadline,
            bulk_id=message.bulk_id,
        )  # fmt: skip
    except ConvergenceError as exc:  # the template itself is unusable: nothing of this chunk can start
        log.error("%s not started for %d tenants: %s", message.template, len(tenants), exc.message)
        for tenant in tenants:
            report.add(tenant, "FAILED", "refused", error=exc.message)
        report.write(rt)
        outcome["refused"] += len(tenants)
        _record_slot_chunk(rt, message, outcome, skipped)
        return dict(outcome)
    steps: list[StepMessage] = []
    for tenant, result in started.items():
        if result.error is not None:
            error = result.error
            kind = "in_flight" if isinstance(error, Conflict) else (
                "refused" if error.status in (400, 404, 409, 422, 429) else "failed")  # fmt: skip
            outcome[kind] += 1
            if kind == "in_flight":
                running = error.details.get("pipeline_logging_id")
                report.add(tenant, "SKIPPED", kind, error=f"an identical run is already in flight: {running}")
            else:
                log.warning("%s for %s not started: %s", message.template, tenant, error.message)
                report.add(tenant, "FAILED", kind, error=error.message)
            continue
        run = result.run
        assert run is not None  # an outcome without an error carries its run
        report.add(tenant, run.status, "already_started" if result.replayed else "started",
                   run_id=run.pipeline_logging_id, error=run.error_message)  # fmt: skip
        if result.replayed:
            outcome["already_started"] += 1
            if run.status != "PENDING":
                continue  # its steps have begun. A PENDING one's step 0 may never have been published
                # (the earlier delivery stopped after its records): it is published again, which at worst
                # delivers step 0 twice, as Pub/Sub may anyway (the step's run claim takes it once).
        else:
            outcome["started"] += 1
        steps.append(StepMessage(run_id=run.pipeline_logging_id, tenant_id=tenant, step_index=0))
    _enqueue(rt, steps, outcome, report)  # first: the runs started here must not wait on the hand-on below
    report.write(rt)
    rest = [t for t in tenants if t not in started]
    if rest:
        follow_up = message.model_copy(update={"tenants": rest})
        rt.bus.publish(rt.settings.schedules_topic, follow_up, follow_up.attributes())
        outcome["handed_on"] = len(rest)
    _record_slot_chunk(rt, message, outcome, skipped)
    return dict(outcome)


def _record_slot_chunk(
    rt: Runtime, message: ScheduleMessage, outcome: Counter[str], skipped: dict[str, str]
) -> None:
    """Add to a scheduled slot's dispatch record what this chunk did (bulk runs keep their own record)."""
    if message.bulk_id or not (message.schedule_id and message.due_at):
        return
    assert isinstance(message.tenants, list)
    key = hashlib.sha256(json.dumps([message.chunk, sorted(message.tenants)]).encode()).hexdigest()[:40]
    refused = sum(outcome[k] for k in ("refused", "failed", "in_flight", "unknown_tenants"))
    schedule_records.record_chunk(rt, {
        "schedule_id": message.schedule_id, "due_at": as_utc(dt.datetime.fromisoformat(message.due_at)),
        "chunk": message.chunk, "message_key": key, "template": message.template,
        "tenants": len(message.tenants), "started": outcome["started"] + outcome["already_started"],
        "skipped": outcome["skipped"], "refused": refused, "handed_on": outcome["handed_on"],
    }, skipped)  # fmt: skip


class BulkReport:
    """What a chunk of a bulk run did for each tenant, written in one statement (other messages: nothing)."""

    def __init__(self, message: ScheduleMessage) -> None:
        self.bulk_id, self.chunk = message.bulk_id, message.chunk
        self.rows: list[dict[str, Any]] = []

    def add(self, tenant: str, status: str, outcome: str, *, run_id: str | None = None,
            error: str | None = None) -> None:  # fmt: skip
        if self.bulk_id is not None:
            self.rows.append({"tenant_id": tenant, "status": status, "outcome": outcome,
                              "pipeline_logging_id": run_id, "error_message": error})  # fmt: skip

    def write(self, rt: Runtime) -> None:
        if self.bulk_id is not None and self.rows:
            bulk_runs.record_outcomes(rt, self.bulk_id, self.rows, chunk=self.chunk)
            self.rows = []


def _enqueue(rt: Runtime, steps: list[StepMessage], outcome: Counter[str], report: BulkReport) -> None:
    """Publish step 0 of every started run in one batch; runs whose message cannot be published fail."""
    if not steps:
        return
    try:
        rt.bus.publish_many(rt.settings.steps_topic, steps)
        return
    except ConvergenceError as exc:
        log.warning(
            "batch of %d step messages not fully published (%s); retrying one by one", len(steps), exc
        )
    for step in steps:
        try:
            rt.bus.publish(rt.settings.steps_topic, step, step.attributes())
        except ConvergenceError as exc:
            outcome["failed"] += 1
            report.add(step.tenant_id, "FAILED", "not_enqueued", run_id=step.run_id,
                       error=f"could not enqueue: {exc.message}")  # fmt: skip
            records = runs.run_records(rt.warehouse, step.tenant_id, step.run_id)
            if records:
                record = records[-1]
                runs.append_run_status(
                    rt.warehouse,
                    step.tenant_id,
                    record,
                    "FAILED",
                    error_message=f"could not enqueue: {exc.message}",
                )


def start_for_tenants(rt: Runtime, message: ScheduleMessage) -> dict[str, int]:
    """Handle one schedules message: fan out when it names many tenants, else start its chunk."""
    if message.tenants == "*" or len(message.tenants) > rt.settings.fanout_chunk_size:
        return fan_out(rt, message)
    return start_chunk(rt, message)
