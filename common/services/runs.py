"""The run object of CONTRACT §2, built from a run's latest record, its steps' latest records and its plan.

The records themselves (and every statement on pipeline_runs and step_logs) live in common.metadata.runs.
"""

from __future__ import annotations

import datetime as dt

from common.contracts.pipelines import Run, RunStep
from common.metadata.runs import RunRecord, StepRecord
from common.templates.models import ResolvedPipeline


def _duration_ms(start: dt.datetime | None, end: dt.datetime | None) -> int | None:
    if start is not None and end is not None:
        return int((end - start).total_seconds() * 1000)
    return None


def run_view(latest: RunRecord, steps: dict[int, StepRecord], pipeline: ResolvedPipeline | None) -> Run:
    """The run as the API answers it: every planned step, PENDING until it has a record."""
    planned = pipeline.steps if pipeline else []
    views = []
    for index in sorted(set(range(len(planned))) | set(steps)):
        record = steps.get(index)
        if record is None:
            plan = planned[index]
            pending = RunStep(
                step_index=index, step_id=plan.step_id, name=plan.name, ps_type=plan.ps_type, status="PENDING",
                start_time=None, end_time=None, duration_ms=None, rows_processed=None, bytes_processed=None,
                error_message=None,
            )  # fmt: skip
            views.append(pending)
            continue
        views.append(
            RunStep(
                step_index=index,
                step_id=record.step_id,
                name=record.name if record.name is not None else record.step_id,  # a "" name stays ""
                ps_type=record.ps_type,
                status="RUNNING" if record.status == "RETRYING" else record.status,  # type: ignore[arg-type]
                start_time=record.start_time,
                end_time=record.end_time,
                duration_ms=record.duration_ms,
                rows_processed=record.rows_processed,
                bytes_processed=record.bytes_processed,
                error_message=record.error_message,
            )
        )
    return Run(
        pipeline_logging_id=latest.pipeline_logging_id,
        pipeline_id=latest.pipeline_id,
        tenant_id=latest.tenant_id,
        provider=latest.provider,
        domain=latest.domain,
        template=latest.template,
        status=latest.status,  # type: ignore[arg-type]
        trigger_type=latest.trigger_type,  # type: ignore[arg-type]
        trigger_by=latest.trigger_by or "",
        start_time=latest.start_time,  # type: ignore[arg-type]
        end_time=latest.end_time,
        duration_ms=_duration_ms(latest.start_time, latest.end_time),
        parameters=latest.parameter_values,
        error_message=latest.error_message,
        steps=views,
    )
