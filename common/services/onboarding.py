"""Bootstrap the platform and onboard organisations, by running the setup pipelines in configs/setup."""

from __future__ import annotations

import uuid
from typing import Any

from common.bus.messages import StepMessage
from common.contracts.onboarding import BootstrapRequest, DryrunRequest, OnboardRequest
from common.errors import BadRequest, Conflict, ConvergenceError, NotFound
from common.metadata import organizations
from common.metadata.control_dataset import is_bootstrapped
from common.processors.registry import StepContext, StepResult, get_processor
from common.processors.setup import RESERVED_SLUGS
from common.runtime import Runtime
from common.services import execution, notifications, pipelines
from common.services.auth import issue_api_key
from common.templates import load_setup_pipeline, resolve_template

DRYRUN_TEMPLATE = ("gcp", "example", "dryrun")
# One request onboards an organisation at a time, on any instance; longer than the function may run.
ONBOARD_LEASE_SECONDS = 600.0


class NotBootstrapped(Conflict):
    code = "not_bootstrapped"


def run_setup_pipeline(
    rt: Runtime, name: str, tenant_id: str, variables: dict[str, Any]
) -> dict[str, StepResult]:
    """Run a setup pipeline step by step in this process; a failing step raises."""
    pipeline = resolve_template(
        load_setup_pipeline(name), tenant_id=tenant_id, provider="setup", domain=name,
        template_name=name, run_id=str(uuid.uuid4()), request=variables,
    )  # fmt: skip
    results = {}
    for step in pipeline.steps:
        context = StepContext(rt, tenant_id, pipeline.variables["run_id"], pipeline, step)
        results[step.step_id] = get_processor(step.ps_type)(context)
    return results


def bootstrap(rt: Runtime, request: BootstrapRequest) -> dict[str, Any]:
    """Create the control dataset and tables; safe to repeat."""
    results = run_setup_pipeline(
        rt,
        "bootstrap",
        rt.settings.control_dataset,
        {"force_recreate_dataset": request.force_recreate_dataset},
    )
    return {
        "status": "ok",
        "dataset": rt.settings.control_dataset,
        "dataset_created": results["control_dataset"].details["created"],
        "tables_created": results["control_tables"].details["tables_created"],
    }


def _ensure_allowed_slug(rt: Runtime, org_slug: str) -> None:
    if org_slug in RESERVED_SLUGS or org_slug == rt.settings.control_dataset:
        raise BadRequest(f"{org_slug} is reserved and cannot be an organisation", code="reserved_org_slug")


def dryrun(rt: Runtime, request: DryrunRequest) -> dict[str, Any]:
    """What onboarding would find, without changing anything."""
    results = run_setup_pipeline(
        rt, "dryrun", request.org_slug,
        {"company_name": request.company_name, "admin_email": request.admin_email,
         "subscription_plan": request.subscription_plan},
    )  # fmt: skip
    checks = results["checks"].details["checks"]
    return {
        "org_slug": request.org_slug,
        "ready": all(c["status"] != "failed" for c in checks),
        "checks": checks,
    }


def onboard(rt: Runtime, request: OnboardRequest) -> dict[str, Any]:
    """Create the organisation's dataset, tables and key, register it, run its dry-run pipeline, welcome it.

    The welcome mail goes to admin_email after everything else; whether it could be sent never changes the
    outcome (`welcome_email` says what became of it).
    """
    org = request.org_slug
    _ensure_allowed_slug(rt, org)
    if not is_bootstrapped(rt):
        raise NotBootstrapped("the platform is not bootstrapped: call POST /api/v1/admin/bootstrap first")
    claim = rt.claims.acquire(f"onboard/{org}", lease=ONBOARD_LEASE_SECONDS)
    if claim is None:
        raise Conflict(f"organisation {org} is being onboarded by another request", code="org_exists")
    try:
        if organizations.get_profile(rt, org) is not None:
            raise Conflict(f"organisation {org} is already onboarded", code="org_exists")
        results = run_setup_pipeline(
            rt, "onboarding", org,
            {"company_name": request.company_name, "admin_email": request.admin_email,
             "subscription_plan": request.subscription_plan,
             "force_recreate_dataset": request.force_recreate_dataset,
             "force_recreate_tables": request.force_recreate_tables},
        )  # fmt: skip
    finally:
        rt.claims.release(claim)
    dryrun_status, dryrun_run_id = _run_dryrun_pipeline(rt, org)
    welcome = notifications.send_welcome(
        rt,
        org,
        admin_email=request.admin_email,
        company_name=request.company_name,
        dryrun_status=dryrun_status,
    )
    return {
        "org_slug": org,
        "api_key": results["api_key"].details["api_key"],
        "dataset_created": results["tenant_dataset"].details["created"],
        "tables_created": results["tenant_tables"].details["tables_created"],
        "dryrun_status": dryrun_status,
        "dryrun_pipeline_logging_id": dryrun_run_id,
        "welcome_email": welcome,
        "message": f"Organisation {org} onboarded. Store the API key now: it is shown only once.",
    }


def _run_dryrun_pipeline(rt: Runtime, org: str) -> tuple[str, str | None]:
    """Run gcp/example/dryrun to completion in-process; its status tells the tenant's set-up works."""
    try:
        run, _ = pipelines.start_run(rt, org, *DRYRUN_TEMPLATE, {"trigger_by": "onboarding"}, publish=False)
        execution.run_inline(rt, StepMessage(run_id=run.pipeline_logging_id, tenant_id=org, step_index=0))
        return pipelines.get_run(rt, org, run.pipeline_logging_id).status, run.pipeline_logging_id
    except ConvergenceError as exc:
        return f"FAILED: {exc.message}", None


def rotate_api_key(rt: Runtime, org_slug: str) -> dict[str, Any]:
    """Issue a new key; the old one stops working at once."""
    if organizations.get_profile(rt, org_slug) is None:
        raise NotFound(f"no organisation {org_slug}", code="org_not_found")
    return {"org_slug": org_slug, "api_key": issue_api_key(rt, org_slug),
            "message": "Store the new API key now: it is shown only once. The previous key no longer works."}  # fmt: skip
