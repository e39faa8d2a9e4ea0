"""Fan-out of scheduled and bulk runs: one schedules message starts a template for many tenants, in two levels.

Level 1: a message for `"*"` (every active tenant) or for more tenants than FANOUT_CHUNK_SIZE only splits the
tenant list into chunks and publishes one message per chunk, batched. Level 2: a chunk message starts the
template for each of its tenants (creating each PENDING run without publishing) and then publishes all their
step-0 messages in one batch. No invocation outgrows the event limits: a chunk message holds at most
FANOUT_CHUNK_SIZE tenant ids (500 x 50 characters is ~26 KB of the 512 KB an event may carry), and a chunk
that runs past FANOUT_TIME_BUDGET_SECONDS hands its remaining tenants on in a new message instead of
running into the 9-minute limit.

Pub/Sub delivers at least once, so every message may arrive twice. Runs of a message share an idempotency
key derived from the message (its schedule and slot, or its content), so a redelivered chunk finds the runs
it already started instead of starting them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from common.bus.messages import ScheduleMessage, StepMessage
from common.errors import Conflict, ConvergenceError
from common.metadata import organizations, runs
from common.runtime import Runtime
from common.services import pipelines

log = logging.getLogger(__name__)


def idempotency_key(message: ScheduleMessage) -> str:
    """One key per scheduled slot (or per bulk request): the same message never starts a tenant's run twice."""
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


def start_chunk(rt: Runtime, message: ScheduleMessage, *, now: Any = time.monotonic) -> dict[str, int]:
    """Level 2: start the template for each tenant of a chunk, then enqueue every step 0 in one batch.

    `pipelines.start_runs` admits the chunk's quotas in bulk; when the time budget is spent it stops, and
    the tenants it did not reach are handed on in a new message.
    """
    assert isinstance(message.tenants, list)
    provider, domain, template = message.template.split("/")
    deadline = now() + rt.settings.fanout_time_budget_seconds
    wanted = list(dict.fromkeys(message.tenants))
    active = set(organizations.active_org_slugs(rt, wanted))
    outcome: Counter[str] = Counter(unknown_tenants=len([t for t in wanted if t not in active]))
    body = dict(message.parameters) | {"trigger_by": message.trigger_by}
    tenants = [t for t in wanted if t in active]
    try:
        started = pipelines.start_runs(
            rt, tenants, provider, domain, template, body, trigger_type=message.trigger_type,
            idempotency_key=idempotency_key(message), should_stop=lambda: now() > deadline,
        )  # fmt: skip
    except ConvergenceError as exc:  # the template itself is unusable: nothing of this chunk can start
        log.error("%s not started for %d tenants: %s", message.template, len(tenants), exc.message)
        return dict(outcome | Counter(refused=len(tenants)))
    steps: list[StepMessage] = []
    for tenant, result in started.items():
        if result.error is not None:
            error = result.error
            outcome["in_flight" if isinstance(error, Conflict) else
                    "refused" if error.status in (400, 404, 409, 422, 429) else "failed"] += 1  # fmt: skip
            if not isinstance(error, Conflict):
                log.warning("%s for %s not started: %s", message.template, tenant, error.message)
            continue
        run = result.run
        assert run is not None  # an outcome without an error carries its run
        if result.replayed:
            outcome["already_started"] += 1
            if run.status != "PENDING" or run.steps:
                continue  # an earlier delivery enqueued it; a PENDING run with no step may not have been
        else:
            outcome["started"] += 1
        steps.append(StepMessage(run_id=run.pipeline_logging_id, tenant_id=tenant, step_index=0))
    _enqueue(rt, steps, outcome)  # first: the runs started here must not wait on the hand-on below
    rest = [t for t in tenants if t not in started]
    if rest:
        follow_up = message.model_copy(update={"tenants": rest})
        rt.bus.publish(rt.settings.schedules_topic, follow_up, follow_up.attributes())
        outcome["handed_on"] = len(rest)
    return dict(outcome)


def _enqueue(rt: Runtime, steps: list[StepMessage], outcome: Counter[str]) -> None:
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
