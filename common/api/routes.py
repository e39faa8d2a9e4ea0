"""Every route of CONTRACT §2: path, auth, which function serves it, its declared models, and a thin handler.

A handler gets the request context with the query string already parsed by the route's query model
(`ctx.query`) and reads its JSON body through the route's body model (`ctx.body()`); it calls one service
and returns (status, answer). The answer of each status is the model the route declares for it.
"""

from __future__ import annotations

from typing import Any

from common.api.docs import docs_page
from common.api.http import RequestContext, Route, read_body
from common.api.openapi import openapi_document
from common.contracts.bulk import BulkAccepted, BulkRunRequest, BulkStatus
from common.contracts.costs import CostSummary, CostSummaryQuery
from common.contracts.data import (
    UPLOAD_CONTENT_TYPES,
    TableList,
    TablePage,
    TablePageQuery,
    Uploaded,
    UploadQuery,
)
from common.contracts.integrations import (
    IntegrationChecked,
    IntegrationDeleted,
    IntegrationEntry,
    IntegrationList,
    IntegrationSetupRequest,
    IntegrationStored,
)
from common.contracts.notifications import NotificationSettingsRequest, NotificationSettingsView
from common.contracts.onboarding import (
    Bootstrapped,
    BootstrapRequest,
    CustomerOnboarded,
    CustomerOnboardRequest,
    DryrunReport,
    DryrunRequest,
    KeyRotated,
    Onboarded,
    OnboardRequest,
)
from common.contracts.pipelines import (
    Run,
    RunAccepted,
    RunList,
    RunListQuery,
    RunRequest,
    TemplateCatalogue,
)
from common.contracts.platform import Health, HtmlPage, OpenApiDocument
from common.contracts.schedules import ScheduleDeleted, ScheduleList, ScheduleRequest, ScheduleView
from common.errors import ConvergenceError, NotFound
from common.services import bulk as bulk_runs
from common.services import costs, data, integrations, notifications, onboarding, pipelines, tenant_schedules


def health(ctx: RequestContext) -> tuple[int, Any]:
    try:
        rt = ctx.runtime
        rt.warehouse.ping()
    except ConvergenceError as exc:
        return 503, {"status": "degraded", "error": exc.code, "message": exc.message}
    return 200, {
        "status": "ok",
        "warehouse": rt.warehouse.name,
        "bus": rt.bus.name,
        "keyring": rt.keyring.name,
    }


def openapi(ctx: RequestContext) -> tuple[int, Any]:
    return 200, openapi_document(ctx.routes)


def api_docs(ctx: RequestContext) -> tuple[int, Any]:
    if not ctx.runtime.settings.api_docs_enabled:
        raise NotFound("the API page is off here (ENABLE_API_DOCS); /openapi.json describes every route",
                       code="api_docs_disabled")  # fmt: skip
    return 200, docs_page()


def bootstrap(ctx: RequestContext) -> tuple[int, Any]:
    return 200, onboarding.bootstrap(ctx.runtime, ctx.body())


def dryrun(ctx: RequestContext) -> tuple[int, Any]:
    return 200, onboarding.dryrun(ctx.runtime, ctx.body())


def onboard(ctx: RequestContext) -> tuple[int, Any]:
    return 201, onboarding.onboard(ctx.runtime, ctx.body())


def onboard_customer(ctx: RequestContext) -> tuple[int, Any]:
    body: CustomerOnboardRequest = ctx.body()
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


def get_notifications(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, notifications.settings_view(ctx.runtime, org)


def put_notifications(ctx: RequestContext, org: str) -> tuple[int, Any]:
    by = "root" if ctx.is_root else "tenant"
    return 200, notifications.update_settings(ctx.runtime, org, ctx.body(), updated_by=by)


def setup_integration(ctx: RequestContext, org: str, provider: str) -> tuple[int, Any]:
    return 200, integrations.setup_integration(ctx.runtime, org, provider, ctx.body())


def list_integrations(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, integrations.list_integrations(ctx.runtime, org)


def get_integration(ctx: RequestContext, org: str, provider: str) -> tuple[int, Any]:
    return 200, integrations.get_integration(ctx.runtime, org, provider)


def validate_integration(ctx: RequestContext, org: str, provider: str) -> tuple[int, Any]:
    return 200, integrations.validate_integration(ctx.runtime, org, provider)


def delete_integration(ctx: RequestContext, org: str, provider: str) -> tuple[int, Any]:
    return 200, integrations.delete_integration(ctx.runtime, org, provider)


def run_pipeline(ctx: RequestContext, org: str, provider: str, domain: str, template: str) -> tuple[int, Any]:
    # The raw object, not RunRequest: the template decides which variables exist and what they may be,
    # and the run service refuses the rest with 400 naming them (RunRequest describes the shape).
    body = ctx.json()
    run, replayed = pipelines.start_run(
        ctx.runtime, org, provider, domain, template, body,
        idempotency_key=ctx.request.headers.get("Idempotency-Key"),
    )  # fmt: skip
    message = "replayed: this Idempotency-Key already started this run" if replayed else "run accepted"
    return 202, {
        "pipeline_logging_id": run.pipeline_logging_id,
        "pipeline_id": run.pipeline_id,
        "status": run.status if replayed else "PENDING",
        "message": message,
        "parameters": run.parameters,
        "replayed": replayed,
    }


def get_run(ctx: RequestContext, run_id: str) -> tuple[int, Any]:
    return 200, pipelines.get_run(ctx.runtime, ctx.org, run_id)  # type: ignore[arg-type]


def get_run_status(ctx: RequestContext, org: str, run_id: str) -> tuple[int, Any]:
    return 200, pipelines.get_run(ctx.runtime, org, run_id)


def list_runs(ctx: RequestContext) -> tuple[int, Any]:
    query: RunListQuery = ctx.query
    runs = pipelines.list_runs(ctx.runtime, ctx.org, status=query.status, limit=query.limit)  # type: ignore[arg-type]
    return 200, {"runs": runs}


def list_templates(ctx: RequestContext) -> tuple[int, Any]:
    return 200, {"templates": pipelines.template_catalogue()}


def upload(ctx: RequestContext, org: str, table: str) -> tuple[int, Any]:
    query: UploadQuery = ctx.query
    body = read_body(ctx.request, ctx.runtime.settings.max_request_bytes)
    return 201, data.upload(ctx.runtime, org, table, ctx.request.content_type, body, query.mode)


def list_tables(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, data.list_tables(ctx.runtime, org)


def read_table(ctx: RequestContext, org: str, table: str) -> tuple[int, Any]:
    query: TablePageQuery = ctx.query
    # The service takes the page bounds as query-string text; these are already checked, so it accepts them.
    return 200, data.read_table(ctx.runtime, org, table, str(query.limit), str(query.offset))


def cost_summary(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, costs.summarise(ctx.runtime, org, ctx.query)


def create_schedule(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 201, tenant_schedules.create_schedule(ctx.runtime, org, ctx.body())


def list_schedules(ctx: RequestContext, org: str) -> tuple[int, Any]:
    return 200, tenant_schedules.list_schedules(ctx.runtime, org)


def delete_schedule(ctx: RequestContext, org: str, schedule_id: str) -> tuple[int, Any]:
    return 200, tenant_schedules.delete_schedule(ctx.runtime, org, schedule_id)


def start_bulk_run(ctx: RequestContext) -> tuple[int, Any]:
    key = ctx.request.headers.get("Idempotency-Key")
    return 202, bulk_runs.start_bulk(ctx.runtime, ctx.body(), idempotency_key=key)


def bulk_run_status(ctx: RequestContext, bulk_id: str) -> tuple[int, Any]:
    return 200, bulk_runs.bulk_status(ctx.runtime, bulk_id)


BODY_ERRORS = (400, 401, 413, 422, 503)  # a root route with a JSON body
ROUTES: list[Route] = [
    Route("GET", "/health", health, "none", "both", "Liveness and warehouse reachability",
          responses={200: Health}, errors=(503,),
          error_descriptions={503: "The warehouse does not answer (status degraded, with error and message)"}),
    Route("GET", "/openapi.json", openapi, "none", "both", "This OpenAPI document",
          responses={200: OpenApiDocument}),
    Route("GET", "/docs", api_docs, "none", "both", "Interactive page of this OpenAPI document; works offline",
          responses={200: HtmlPage}, media_type="text/html", errors=(404,),
          error_descriptions={404: "ENABLE_API_DOCS is off (api_docs_disabled), by default in production"}),
    Route("POST", "/api/v1/admin/bootstrap", bootstrap, "root", "onboard",
          "Create the control dataset and tables (idempotent)",
          body=BootstrapRequest, responses={200: Bootstrapped}, errors=BODY_ERRORS),
    Route("POST", "/api/v1/admin/runs/bulk", start_bulk_run, "root", "onboard",
          "Start a template for every active tenant or the tenants listed, fanned out in chunks",
          body=BulkRunRequest, responses={202: BulkAccepted},
          headers={"Idempotency-Key": "Names the bulk run: a repeat publishes it again, starting what is missing"},
          errors=(400, 401, 409, 413, 422, 503),
          error_descriptions={
              400: "Unknown template (template_not_found), bad parameter (invalid_parameter), a listed tenant"
                   " that is not active (unknown_tenant) or a bad Idempotency-Key (invalid_header)",
              409: "The platform is not bootstrapped (not_bootstrapped)",
              422: "Invalid body, or an Idempotency-Key used for another request (idempotency_key_reused)",
              503: "The bus did not take every message (the error names the bulk_id; repeat with the same"
                   " Idempotency-Key to finish it) or the warehouse is down",
          }),
    Route("GET", "/api/v1/admin/runs/bulk/<bulk_id>", bulk_run_status, "root", "onboard",
          "Where a bulk run stands: tenants by run status, failures, skipped tenants",
          responses={200: BulkStatus}, errors=(401, 404, 503),
          error_descriptions={404: "No bulk run has this id (bulk_not_found)"}),
    Route("POST", "/api/v1/organizations/dryrun", dryrun, "root", "onboard",
          "Check an organisation could be onboarded; changes nothing",
          body=DryrunRequest, responses={200: DryrunReport}, errors=BODY_ERRORS),
    Route("POST", "/api/v1/organizations/onboard", onboard, "root", "onboard",
          "Onboard an organisation; returns its API key once",
          body=OnboardRequest, responses={201: Onboarded}, errors=(400, 401, 409, 413, 422, 503),
          error_descriptions={409: "The organisation exists (org_exists) or the platform is not bootstrapped"}),
    Route("POST", "/api/v1/customers/onboard", onboard_customer, "root", "onboard",
          "Onboard (older name of the same operation)",
          body=CustomerOnboardRequest, responses={201: CustomerOnboarded}, errors=(400, 401, 409, 413, 422, 503)),
    Route("POST", "/api/v1/organizations/<org>/api-keys/rotate", rotate_key, "root_or_tenant", "onboard",
          "Issue a new API key; the old one stops working at once",
          responses={200: KeyRotated}, errors=(401, 403, 404, 503)),
    Route("GET", "/api/v1/organizations/<org>/notifications", get_notifications, "root_or_tenant", "onboard",
          "Who the platform mails for this organisation (welcome, failed scheduled runs, notifications)",
          responses={200: NotificationSettingsView}, errors=(401, 403, 404, 503),
          error_descriptions={404: "No such organisation (org_not_found), with the root key"}),
    Route("PUT", "/api/v1/organizations/<org>/notifications", put_notifications, "root_or_tenant", "onboard",
          "Set the organisation's notification recipients; fields left out keep their value",
          body=NotificationSettingsRequest, responses={200: NotificationSettingsView},
          errors=(400, 401, 403, 404, 413, 422, 503),
          error_descriptions={404: "No such organisation (org_not_found), with the root key",
                              422: "An address that is not one, more than 20, or an unknown field"}),
    Route("POST", "/api/v1/integrations/<org>/<provider>/setup", setup_integration, "tenant", "onboard",
          "Store a provider credential, encrypted, with what one read-only call to the provider found; never echoed",
          body=IntegrationSetupRequest, responses={200: IntegrationStored}, errors=(400, 401, 403, 413, 422, 503)),
    Route("GET", "/api/v1/integrations/<org>", list_integrations, "tenant", "onboard",
          "List integrations without secrets", responses={200: IntegrationList}, errors=(401, 403, 503)),
    Route("POST", "/api/v1/integrations/<org>/<provider>/validate", validate_integration, "tenant", "onboard",
          "Try the stored credential with one read-only call to the provider; record and answer the result",
          responses={200: IntegrationChecked}, errors=(400, 401, 403, 404, 503),
          error_descriptions={400: "Unknown provider (unknown_provider)",
                              404: "The tenant has no integration of this provider (integration_not_found)"}),
    Route("GET", "/api/v1/integrations/<org>/<provider>", get_integration, "tenant", "onboard",
          "One integration with its last check, without its secret", responses={200: IntegrationEntry},
          errors=(400, 401, 403, 404, 503),
          error_descriptions={400: "Unknown provider (unknown_provider)",
                              404: "The tenant has no integration of this provider (integration_not_found)"}),
    Route("DELETE", "/api/v1/integrations/<org>/<provider>", delete_integration, "tenant", "onboard",
          "Delete an integration, credential included", responses={200: IntegrationDeleted},
          errors=(400, 401, 403, 404, 503),
          error_descriptions={400: "Unknown provider (unknown_provider)",
                              404: "The tenant has no integration of this provider (integration_not_found)"}),
    Route("POST", "/api/v1/pipelines/run/<org>/<provider>/<domain>/<template>", run_pipeline, "tenant", "trigger",
          "Start a templated pipeline run",
          body=RunRequest, responses={202: RunAccepted},
          headers={"Idempotency-Key": "Replays with the same key return the original run"},
          errors=(400, 401, 403, 404, 409, 413, 422, 429, 503),
          error_descriptions={409: "An identical run is in flight (run_in_flight, with its pipeline_logging_id)"}),
    Route("GET", "/api/v1/pipelines/runs/<run_id>", get_run, "tenant", "trigger", "One run with its steps",
          responses={200: Run}, errors=(401, 404, 429, 503)),
    Route("GET", "/api/v1/pipelines/status/<org>/<run_id>", get_run_status, "tenant", "trigger",
          "One run with its steps (org in the path)",
          responses={200: Run}, errors=(401, 403, 404, 429, 503)),
    Route("GET", "/api/v1/pipelines/runs", list_runs, "tenant", "trigger", "This tenant's runs, newest first",
          query=RunListQuery, responses={200: RunList}, errors=(400, 401, 429, 503),
          error_descriptions={400: "Bad status or limit (invalid_query, naming it in parameter)"}),
    Route("GET", "/api/v1/pipelines/templates", list_templates, "tenant", "trigger",
          "Runnable templates and their variables",
          responses={200: TemplateCatalogue}, errors=(401, 429, 503)),
    Route("POST", "/api/v1/data/<org>/uploads/<table>", upload, "tenant", "trigger",
          "Load CSV, NDJSON or Parquet into a tenant table",
          raw_body=UPLOAD_CONTENT_TYPES, query=UploadQuery, responses={201: Uploaded},
          errors=(400, 401, 403, 413, 415, 503)),
    Route("GET", "/api/v1/data/<org>/tables", list_tables, "tenant", "trigger", "The tenant's tables and row counts",
          responses={200: TableList}, errors=(401, 403, 503)),
    Route("GET", "/api/v1/data/<org>/tables/<table>", read_table, "tenant", "trigger", "A page of a table's rows",
          query=TablePageQuery, responses={200: TablePage}, errors=(400, 401, 403, 404, 503),
          error_descriptions={400: "Bad limit or offset (invalid_query) or table name (invalid_table_name)"}),
    Route("GET", "/api/v1/costs/<org>/summary", cost_summary, "tenant", "trigger",
          "Costs of focus_costs in a date range by provider, service or day; currencies never mixed",
          query=CostSummaryQuery, query_parser=costs.parse_query, responses={200: CostSummary},
          errors=(400, 401, 403, 422, 503),
          error_descriptions={
              400: "Bad query parameter (error invalid_query, naming it in parameter)",
              422: "convert_to needs a rate missing from exchange_rates (missing_exchange_rate), "
                   "exchange_rates or focus_costs is unusable (invalid_exchange_rates, "
                   "ambiguous_exchange_rate, invalid_focus_costs)",
          }),
    # Schedules are served by the trigger function, which owns pipelines (CONTRACT §2 does not list them).
    Route("POST", "/api/v1/schedules/<org>", create_schedule, "tenant", "trigger",
          "Schedule a template for this tenant (cron in a time zone, at most every 15 minutes)",
          body=ScheduleRequest, responses={201: ScheduleView}, errors=(400, 401, 403, 409, 413, 422, 503),
          error_descriptions={
              400: "Unknown template (template_not_found), bad parameter (invalid_parameter), cron "
                   "(invalid_cron) or time zone (invalid_time_zone)",
              409: "A schedule of this tenant already has this name (schedule_name_taken)",
              422: "Invalid body, a cron more frequent than every 15 minutes (schedule_too_frequent), or "
                   "the tenant's 50 schedules reached (schedule_limit_reached)",
          }),
    Route("GET", "/api/v1/schedules/<org>", list_schedules, "tenant", "trigger",
          "This tenant's schedules with their next slot", responses={200: ScheduleList}, errors=(401, 403, 503)),
    Route("DELETE", "/api/v1/schedules/<org>/<schedule_id>", delete_schedule, "tenant", "trigger",
          "Delete a schedule; it never starts again", responses={200: ScheduleDeleted},
          errors=(401, 403, 404, 503)),
]  # fmt: skip


def routes_for(group: str) -> list[Route]:
    """The routes one function serves (`both` = everything, for `convergence serve`)."""
    return [r for r in ROUTES if group == "both" or r.group in (group, "both")]
