"""Every route of CONTRACT §2: path, auth, which function serves it, and a thin handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from common.contracts.costs import CostSummary, CostSummaryQuery
from common.api.http import RequestContext, Route, read_body
from common.contracts.requests import (
    BootstrapRequest,
    CustomerOnboardRequest,
    DryrunRequest,
    IntegrationSetupRequest,
    OnboardRequest,
    RunRequest,
    ScheduleDeleted,
    ScheduleList,
    ScheduleRequest,
    ScheduleView,
)
from common.errors import BadRequest, ConvergenceError
from common.services import costs, data, integrations, onboarding, pipelines, schedules
from common.services.runs import RUN_STATUSES


@dataclass
class ModelRoute(Route):
    """A route whose query string and answer are pydantic models, so OpenAPI gives their exact schemas."""

    query_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    error_descriptions: dict[int, str] = field(default_factory=dict)


def health(ctx: RequestContext) -> tuple[int, Any]:
    try:
        rt = ctx.runtime
        rt.warehouse.ping()
    except ConvergenceError as exc:
        return 503, {"status": "degraded", "error": exc.code, "message": exc.message}
    return 200, {"status": "ok", "warehouse": rt.warehouse.name, "bus": rt.bus.name, "keyring": rt.keyring.name}


def openapi(ctx: RequestContext) -> tuple[int, Any]:
    from common.api.openapi import openapi_document

    return 200, openapi_document(ctx.request.environ.get("convergence.group", "both"))


def bootstrap(ctx: RequestContext) -> tuple[int, Any]:
    return 200, onboarding.bootstrap(ctx.runtime, ctx.json(BootstrapRequest))


def dryrun(ctx: RequestContext) -> tuple[int, Any]:
    return 200, onboarding.dryrun(ctx.runtime, ctx.json(DryrunRequest))


def onboard(ctx: RequestContext) -> tuple[int, Any]:
    return 201, onboarding.onboard(ctx.runtime, ctx.json(OnboardRequest))


def onboard_customer(ctx: RequestContext) -> tuple[int, Any]:
    body = ctx.json(CustomerOnboardRequest)
    request = OnboardRequest(
        org_slug=body.tenant_id,
        company_name=body.company_name or body.tenant_id,
        admin_email=body.admin_email or f"admin@{body.tenant_id.replace('_', '-')}.invalid",
        subscription_plan=body.subscription_plan,
    )
    result = onboarding.onboard(ctx.runtime, request)
    return 201, {"tenant_id": result.pop("org_slug"), **result}


def rotate_key(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, onboarding.rotate_api_key(ctx.runtime, org)


def setup_integration(ctx: RequestContext, org: str, provider: str) -> tuple[int, Any]:
    return 200, integrations.setup_integration(ctx.runtime, org, provider, ctx.json(IntegrationSetupRequest))


def list_integrations(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, integrations.list_integrations(ctx.runtime, org)


def run_pipeline(ctx: RequestContext, org: str, provider: str, domain: str, template: str) -> tuple[int, Any]:
    body = ctx.json()
    run, replayed = pipelines.start_run(
        ctx.runtime, org, provider, domain, template, body,
        idempotency_key=ctx.request.headers.get("Idempotency-Key"),
    )  # fmt: skip
    message = "replayed: this Idempotency-Key already started this run" if replayed else "run accepted"
    return 202, {
        "pipeline_logging_id": run["pipeline_logging_id"],
        "pipeline_id": run["pipeline_id"],
        "status": run["status"] if replayed else "PENDING",
        "message": message,
        "parameters": run["parameters"],
        "replayed": replayed,
    }


def get_run(ctx: RequestContext, run_id: str) -> tuple[int, Any]:
    return 200, pipelines.get_run(ctx.runtime, ctx.org, run_id)  # type: ignore[arg-type]


def get_run_status(ctx: RequestContext, org: str, run_id: str) -> tuple[int, Any]:
    return 200, pipelines.get_run(ctx.runtime, org, run_id)


def list_runs(ctx: RequestContext) -> tuple[int, Any]:
    args = ctx.request.args
    status = args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        raise BadRequest(f"status must be one of: {', '.join(RUN_STATUSES)}", code="invalid_query")
    raw_limit = args.get("limit") or "50"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise BadRequest("limit must be an integer from 1 to 1000", code="invalid_query")
    return 200, {"runs": pipelines.list_runs(ctx.runtime, ctx.org, status=status, limit=int(raw_limit))}  # type: ignore[arg-type]


def list_templates(ctx: RequestContext) -> tuple[int, Any]:
    return 200, {"templates": pipelines.template_catalogue()}


def upload(ctx: RequestContext, org: str, table: str) -> tuple[int, Any]:
    body = read_body(ctx.request, ctx.runtime.settings.max_request_bytes)
    result = data.upload(ctx.runtime, org, table, ctx.request.content_type, body, ctx.request.args.get("mode"))
    return 201, result


def list_tables(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, data.list_tables(ctx.runtime, org)


def read_table(ctx: RequestContext, org: str, table: str) -> tuple[int, Any]:
    args = ctx.request.args
    return 200, data.read_table(ctx.runtime, org, table, args.get("limit"), args.get("offset"))


def cost_summary(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, costs.summarise(ctx.runtime, org, costs.parse_query(ctx.request.args.lists()))


def create_schedule(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 201, schedules.create_schedule(ctx.runtime, org, ctx.json(ScheduleRequest))


def list_schedules(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, schedules.list_schedules(ctx.runtime, org)


def delete_schedule(ctx: RequestContext, org: str, schedule_id: str) -> tuple[int, Any]:
    return 200, schedules.delete_schedule(ctx.runtime, org, schedule_id)


TENANT_ERRORS = (400, 401, 403, 404, 413, 503)
ROUTES: list[Route] = [
    Route("GET", "/health", health, "none", "both", "Liveness and warehouse reachability", errors=(503,)),
    Route("GET", "/openapi.json", openapi, "none", "both", "This OpenAPI document"),
    Route("POST", "/api/v1/admin/bootstrap", bootstrap, "root", "onboard",
          "Create the control dataset and tables (idempotent)", request_model=BootstrapRequest,
          errors=(400, 401, 413, 422, 503)),
    Route("POST", "/api/v1/organizations/dryrun", dryrun, "root", "onboard",
          "Check an organisation could be onboarded; changes nothing", request_model=DryrunRequest,
          errors=(400, 401, 413, 422, 503)),
    Route("POST", "/api/v1/organizations/onboard", onboard, "root", "onboard",
          "Onboard an organisation; returns its API key once", status=201, request_model=OnboardRequest,
          errors=(400, 401, 409, 413, 422, 503)),
    Route("POST", "/api/v1/customers/onboard", onboard_customer, "root", "onboard",
          "Onboard (older name of the same operation)", status=201, request_model=CustomerOnboardRequest,
          errors=(400, 401, 409, 413, 422, 503)),
    Route("POST", "/api/v1/organizations/<org>/api-keys/rotate", rotate_key, "root_or_tenant", "onboard",
          "Issue a new API key; the old one stops working at once", errors=(401, 403, 404, 503)),
    Route("POST", "/api/v1/integrations/<org>/<provider>/setup", setup_integration, "tenant", "onboard",
          "Store a provider credential, encrypted; never echoed", request_model=IntegrationSetupRequest,
          errors=(400, 401, 403, 413, 422, 503)),
    Route("GET", "/api/v1/integrations/<org>", list_integrations, "tenant", "onboard",
          "List integrations without secrets", errors=(401, 403, 503)),
    Route("POST", "/api/v1/pipelines/run/<org>/<provider>/<domain>/<template>", run_pipeline, "tenant", "trigger",
          "Start a templated pipeline run", status=202, request_model=RunRequest,
          headers={"Idempotency-Key": "Replays with the same key return the original run"},
          errors=(400, 401, 403, 404, 409, 413, 422, 429, 503), rate_limited=True),
    Route("GET", "/api/v1/pipelines/runs/<run_id>", get_run, "tenant", "trigger", "One run with its steps",
          errors=(401, 404, 429, 503), rate_limited=True),
    Route("GET", "/api/v1/pipelines/status/<org>/<run_id>", get_run_status, "tenant", "trigger",
          "One run with its steps (org in the path)", errors=(401, 403, 404, 429, 503), rate_limited=True),
    Route("GET", "/api/v1/pipelines/runs", list_runs, "tenant", "trigger", "This tenant's runs, newest first",
          query={"status": "PENDING, RUNNING, COMPLETE or FAILED", "limit": "1-1000, default 50"},
          errors=(400, 401, 429, 503), rate_limited=True),
    Route("GET", "/api/v1/pipelines/templates", list_templates, "tenant", "trigger",
          "Runnable templates and their variables", errors=(401, 429, 503), rate_limited=True),
    Route("POST", "/api/v1/data/<org>/uploads/<table>", upload, "tenant", "trigger",
          "Load CSV, NDJSON or Parquet into a tenant table", status=201,
          request_content={"text/csv": "string", "application/x-ndjson": "string",
                           "application/vnd.apache.parquet": "binary"},
          query={"mode": "append (default) or replace"}, errors=(400, 401, 403, 413, 415, 503)),
    Route("GET", "/api/v1/data/<org>/tables", list_tables, "tenant", "trigger", "The tenant's tables and row counts",
          errors=(401, 403, 503)),
    Route("GET", "/api/v1/data/<org>/tables/<table>", read_table, "tenant", "trigger", "A page of a table's rows",
          query={"limit": "1-1000, default 100", "offset": "default 0"}, errors=(400, 401, 403, 404, 503)),
    ModelRoute("GET", "/api/v1/costs/<org>/summary", cost_summary, "tenant", "trigger",
               "Costs of focus_costs in a date range by provider, service or day; currencies never mixed",
               errors=(400, 401, 403, 422, 503), query_model=CostSummaryQuery, response_model=CostSummary,
               error_descriptions={
                   400: "Bad query parameter (error invalid_query, naming it in parameter)",
                   422: "convert_to needs a rate missing from exchange_rates (missing_exchange_rate), "
                        "exchange_rates or focus_costs is unusable (invalid_exchange_rates, "
                        "ambiguous_exchange_rate, invalid_focus_costs)",
               }),
    # Schedules are served by the trigger function, which owns pipelines (CONTRACT §2 does not list them).
    ModelRoute("POST", "/api/v1/schedules/<org>", create_schedule, "tenant", "trigger",
               "Schedule a template for this tenant (cron in a time zone, at most every 15 minutes)", status=201,
               request_model=ScheduleRequest, response_model=ScheduleView, errors=(400, 401, 403, 409, 413, 422, 503),
               error_descriptions={
                   400: "Unknown template (template_not_found), bad parameter (invalid_parameter), cron "
                        "(invalid_cron) or time zone (invalid_time_zone)",
                   409: "A schedule of this tenant already has this name (schedule_name_taken)",
                   422: "Invalid body, a cron more frequent than every 15 minutes (schedule_too_frequent), or "
                        "the tenant's 50 schedules reached (schedule_limit_reached)",
               }),
    ModelRoute("GET", "/api/v1/schedules/<org>", list_schedules, "tenant", "trigger",
               "This tenant's schedules with their next slot", response_model=ScheduleList, errors=(401, 403, 503)),
    ModelRoute("DELETE", "/api/v1/schedules/<org>/<schedule_id>", delete_schedule, "tenant", "trigger",
               "Delete a schedule; it never starts again", response_model=ScheduleDeleted,
               errors=(401, 403, 404, 503)),
]  # fmt: skip


def routes_for(group: str) -> list[Route]:
    """The routes one function serves (`both` = everything, for `convergence serve`)."""
    return [r for r in ROUTES if group == "both" or r.group in (group, "both")]
