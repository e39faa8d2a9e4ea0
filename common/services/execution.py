"""Execute one step of a run, then say which step comes next (or close the run).

Idempotent under Pub/Sub's at-least-once delivery: a step whose latest record is final is not run again,
and the next step is only enqueued when it has no record yet. Terminal errors are recorded and
acknowledged; transient errors raise so the bus redelivers; after the dead-letter limit the run fails.
"""

from __future__ import annotations

import logging
import time

from common.bus.messages import DeadMessage, StepMessage
from common.errors import ConvergenceError, TransientError
from common.metadata import runs
from common.metadata.runs import RunRecord, StepRecord
from common.processors.registry import StepContext, get_processor
from common.runtime import Runtime
from common.services import notifications
from common.templates.models import ResolvedPipeline
from common.types import utcnow
from common.warehouse.base import metered

log = logging.getLogger(__name__)


def _run_failed(pipeline: ResolvedPipeline, states: dict[int, StepRecord], upto: int) -> str | None:
    """The error of the first stopping failure before step `upto`, if any."""
    for index in range(upto):
        record = states.get(index)
        if record and record.status == "FAILED" and pipeline.steps[index].on_failure == "stop":
            return f"step {pipeline.steps[index].step_id} failed: {record.error_message or 'error'}"
    return None


def _should_run(trigger: str, failed: bool) -> bool:
    return trigger == "always" or (trigger == "on_failure") == failed


def _advance(
    rt: Runtime, tenant_id: str, latest: RunRecord, pipeline: ResolvedPipeline, index: int,
    states: dict[int, StepRecord],
) -> StepMessage | None:
    """After step `index` is final: the next step's message, or None when the run is closed or moving."""
    if index + 1 < len(pipeline.steps):
        if index + 1 in states:
            return None
        return StepMessage(run_id=latest.pipeline_logging_id, tenant_id=tenant_id, step_index=index + 1)
    if latest.status not in runs.FINAL_RUN_STATUSES:
        failed = _run_failed(pipeline, states, len(pipeline.steps)) is not None
        error = _failure_summary(pipeline, states) if failed else None
        if error is not None:  # before the FAILED record: if that write fails, the notice stays claimed
            notifications.notify_failed_run(rt, latest, pipeline, states, error)
        runs.append_run_status(rt.warehouse, tenant_id, latest, "FAILED" if failed else "COMPLETE", error_message=error)
    return None


def _failure_summary(pipeline: ResolvedPipeline, states: dict[int, StepRecord]) -> str:
    """Every failed step's error, in step order: the first explains the run, later ones (e.g. a
    notification that could not be sent) are worth knowing too."""
    return "; ".join(
        f"step {step.step_id} failed: {states[i].error_message or 'error'}"
        for i, step in enumerate(pipeline.steps)
        if i in states and states[i].status == "FAILED"
    )


def execute_step(rt: Runtime, message: StepMessage, attempt: int = 1) -> StepMessage | None:
    """Run one step (at most once to completion) and return the message of the next step, if any."""
    tenant_id, run_id, index = message.tenant_id, message.run_id, message.step_index
    wh = rt.warehouse
    with rt.claims.hold(f"run/{tenant_id}/{run_id}", lease=rt.settings.step_lease_seconds):
        records = runs.run_records(wh, tenant_id, run_id)
        if not records:
            raise DeadMessage(f"run {run_id} does not exist for tenant {tenant_id}")
        latest = records[-1]
        if latest.status in runs.FINAL_RUN_STATUSES:
            return None
        pipeline = runs.load_snapshot(records)
        if index >= len(pipeline.steps):
            raise DeadMessage(f"run {run_id} has no step {index}")
        states = runs.step_states(wh, tenant_id, [run_id])[run_id]
        current = states.get(index)
        if current and current.status in runs.FINAL_STEP_STATUSES:
            return _advance(rt, tenant_id, latest, pipeline, index, states)
        if latest.status == "PENDING":
            latest = runs.append_run_status(wh, tenant_id, latest, "RUNNING")

        step = pipeline.steps[index]
        failure = _run_failed(pipeline, states, index)
        if not _should_run(step.trigger, failure is not None):
            states[index] = runs.append_step(wh, tenant_id, run_id, index, step, status="SKIPPED", attempt=attempt)
            return _advance(rt, tenant_id, latest, pipeline, index, states)

        started = utcnow()
        clock = time.monotonic()
        context = StepContext(rt, tenant_id, run_id, pipeline, step, attempt=attempt, run_failed=failure is not None)
        try:
            with metered() as meter:
                result = get_processor(step.ps_type)(context)
        except TransientError as exc:
            runs.append_step(wh, tenant_id, run_id, index, step, status="RETRYING", start_time=started,
                             error_message=exc.message, attempt=attempt)
            raise
        except ConvergenceError as exc:
            status, error, rows = "FAILED", exc.message, None
        except Exception as exc:  # a processor bug: retrying the same input cannot help
            log.exception("step %s of run %s crashed", step.step_id, run_id)
            status, error, rows = "FAILED", f"{type(exc).__name__}: {exc}", None
        else:
            status, error, rows = "COMPLETE", None, result.rows_processed
        states[index] = runs.append_step(
            wh, tenant_id, run_id, index, step,
            status=status, start_time=started, end_time=utcnow(),
            duration_ms=int((time.monotonic() - clock) * 1000), rows_processed=rows,
            bytes_processed=meter.bytes_processed, error_message=error, attempt=attempt,
        )  # fmt: skip
        return _advance(rt, tenant_id, latest, pipeline, index, states)


def fail_step_after_retries(rt: Runtime, message: StepMessage, attempts: int) -> StepMessage | None:
    """A step's message reached the dead-letter topic: fail the step, let on_failure steps run, close."""
    tenant_id, run_id, index = message.tenant_id, message.run_id, message.step_index
    wh = rt.warehouse
    with rt.claims.hold(f"run/{tenant_id}/{run_id}", lease=rt.settings.step_lease_seconds):
        records = runs.run_records(wh, tenant_id, run_id)
        if not records or records[-1].status in runs.FINAL_RUN_STATUSES:
            return None
        latest, pipeline = records[-1], runs.load_snapshot(records)
        if index >= len(pipeline.steps):
            return None
        states = runs.step_states(wh, tenant_id, [run_id])[run_id]
        current = states.get(index)
        if current and current.status in runs.FINAL_STEP_STATUSES:
            return _advance(rt, tenant_id, latest, pipeline, index, states)
        last_error = (current.error_message if current else None) or "no error recorded"
        states[index] = runs.append_step(
            wh, tenant_id, run_id, index, pipeline.steps[index], status="FAILED",
            start_time=current.start_time if current else None, end_time=utcnow(), attempt=attempts,
            error_message=f"gave up after {attempts} delivery attempts: {last_error}",
        )  # fmt: skip
        return _advance(rt, tenant_id, latest, pipeline, index, states)


def run_inline(rt: Runtime, message: StepMessage | None) -> None:
    """Drive a run to its end in this process, without the bus (used during onboarding)."""
    while message is not None:
        message = execute_step(rt, message)


def publish_next(rt: Runtime, message: StepMessage | None) -> None:
    """Publish the next step's message, if there is one."""
    if message is not None:
        rt.bus.publish(rt.settings.steps_topic, message, message.attributes())
