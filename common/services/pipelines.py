"""Trigger and read pipeline runs: resolve the template, snapshot it as PENDING, enqueue step 0."""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import ExitStack
from typing import Any

from common.bus.messages import StepMessage
from common.contracts.pipelines import Run
from common.errors import (
    BadRequest,
    Conflict,
    ConvergenceError,
    DependencyUnavailable,
    NotFound,
    ValidationFailed,
)
from common.metadata import runs as records
from common.runtime import Runtime
from common.services import quotas
from common.services.runs import run_view
from common.templates import list_templates, load_template, resolve_template

IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
START_LEASE = 60.0  # seconds: the checks and the run record take well under one


def fingerprint(pipeline_id: str, parameters: dict[str, Any]) -> str:
    """Runs with the same pipeline and parameters (whoever triggers them) are identical."""
    material = {k: v for k, v in parameters.items() if k != "trigger_by"}
    return hashlib.sha256(
        f"{pipeline_id}|{json.dumps(material, sort_keys=True, default=str)}".encode()
    ).hexdigest()


def start_run(
    rt: Runtime,
    tenant_id: str,
    provider: str,
    domain: str,
    template_name: str,
    body: Any,
    *,
    trigger_type: str = "api",
    idempotency_key: str | None = None,
    publish: bool = True,
    admission: quotas.Admission | None = None,
    bulk_id: str | None = None,
) -> tuple[Run, bool]:
    """Create a PENDING run and enqueue its first step (unless the caller drives it). Returns (run, replayed).

    Order of refusals: an Idempotency-Key replay answers the earlier run and an identical run in flight is
    409, both before the quota is checked, so retrying a request never spends quota; then the plan's
    quotas (429, `common.services.quotas`); a refused run leaves no record and publishes nothing. A caller
    that already admitted the run in bulk (`quotas.admit_runs`) passes its `admission`.
    """
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_body")
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
        raise BadRequest(
            "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 _ . : -", code="invalid_header"
        )
    template = load_template(provider, domain, template_name)
    run_id = records.new_run_id()
    pipeline = resolve_template(
        template, tenant_id=tenant_id, provider=provider, domain=domain,
        template_name=template_name, run_id=run_id, request=body,
    )  # fmt: skip
    run_fingerprint = fingerprint(pipeline.pipeline_id, pipeline.parameters)
    wh = rt.warehouse
    with ExitStack() as held:
        # Held across instances (common.claims) from the checks to the run record: a request with the same
        # key, or for the same pipeline, on any instance waits here and then finds this one's run.
        if idempotency_key:
            held.enter_context(
                rt.claims.hold(f"idempotency/{tenant_id}/{idempotency_key}", lease=START_LEASE)
            )
        held.enter_context(rt.claims.hold(f"start/{tenant_id}/{pipeline.pipeline_id}", lease=START_LEASE))
        if idempotency_key:
            earlier = records.latest_runs(wh, tenant_id, idempotency_key=idempotency_key, limit=1)
            if earlier:
                if earlier[0].request_fingerprint != run_fingerprint:
                    raise ValidationFailed(
                        "this Idempotency-Key was used for a different request", code="idempotency_key_reused"
                    )
                return get_run(rt, tenant_id, earlier[0].pipeline_logging_id), True
        active = records.latest_runs(wh, tenant_id, fingerprint=run_fingerprint, active_only=True, limit=1)
        if active:
            raise Conflict(
                "an identical run is already in flight",
                code="run_in_flight",
                pipeline_logging_id=active[0].pipeline_logging_id,
            )
        template_id = quotas.template_key(provider, domain, template_name)
        with quotas.reserved_run(rt, tenant_id, template_id, admission):
            record = records.create_run(
                wh, pipeline, run_id=run_id, trigger_type=trigger_type,
                trigger_by=pipeline.parameters["trigger_by"], fingerprint=run_fingerprint,
                idempotency_key=idempotency_key, bulk_id=bulk_id,
            )  # fmt: skip
    message = StepMessage(run_id=run_id, tenant_id=tenant_id, step_index=0)
    if not publish:
        return run_view(record, {}, pipeline), False
    try:
        rt.bus.publish(rt.settings.steps_topic, message, message.attributes())
    except ConvergenceError as exc:
        records.append_run_status(
            wh, tenant_id, record, "FAILED", error_message=f"could not enqueue: {exc.message}"
        )
        raise DependencyUnavailable("the message bus did not accept the run; it was not started") from None
    return run_view(record, {}, pipeline), False


def get_run(rt: Runtime, tenant_id: str, run_id: str) -> Run:
    """One run of this tenant; another tenant's run is as unknown as a made-up id."""
    if not RUN_ID_RE.fullmatch(run_id or ""):
        raise NotFound("no such run", code="run_not_found")
    found = records.run_records(rt.warehouse, tenant_id, run_id)
    if not found:
        raise NotFound("no such run", code="run_not_found")
    states = records.step_states(rt.warehouse, tenant_id, [run_id])[run_id]
    return run_view(found[-1], states, records.load_snapshot(found))


def list_runs(rt: Runtime, tenant_id: str, *, status: str | None, limit: int) -> list[Run]:
    """This tenant's runs, newest first."""
    latest = records.latest_runs(rt.warehouse, tenant_id, status=status, limit=limit)
    states = records.step_states(rt.warehouse, tenant_id, [r.pipeline_logging_id for r in latest])
    return [run_view(r, states.get(r.pipeline_logging_id, {}), None) for r in latest]


def template_catalogue() -> list[dict[str, Any]]:
    """Runnable templates with what a request may set and what loading warned of."""
    catalogue = []
    for provider, domain, name, template in list_templates():
        variables = {
            "date": {"type": "date", "default": "yesterday (UTC)", "overridable": True},
            "trigger_by": {"type": "string", "default": "api", "overridable": True},
        } | {v: spec.model_dump(exclude_none=True) for v, spec in template.variables.items()}
        catalogue.append(
            {"provider": provider, "domain": domain, "template": name, "name": template.name or None,
             "description": template.description, "variables": variables, "warnings": template.warnings}
        )  # fmt: skip
    return catalogue
