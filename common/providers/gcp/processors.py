"""gcp.billing_export: copy one UTC day (the run's `date`) of the tenant's billing export into its dataset.

The export table is the gcp integration's `billing_export_table` (project.dataset.table). Re-running a day
replaces that day, so the destination never holds a row twice (`billing_export` says how the export is
reached in each mode). A tenant without a gcp integration uploads the export's rows into the destination
instead; the step then keeps them (`common.processors.uploaded`).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import ConfigurationError, TerminalError
from common.metadata.integrations import Integration, IntegrationMissing, read_integration
from common.metadata.schemas import load_schema
from common.processors.registry import StepContext, StepResult, processor
from common.processors.uploaded import integration_setup, use_uploaded_rows
from common.providers.gcp.billing_export import (
    ExportTable,
    copy_from_tenant_project,
    copy_within_engine,
    tenant_bigquery_client,
    uses_platform_engine,
)
from common.providers.gcp.credentials import GcpServiceAccount, GcpSettings
from common.tenancy import WritableTable
from common.types import TABLE_NAME_PATTERN

SCHEMA = "gcp_billing_export_v1"
# The run's day in the export's own column: the rows an upload provides when there is no integration.
DAY_OF_EXPORT = (
    "usage_start_time >= TIMESTAMP(@date) AND usage_start_time < TIMESTAMP(DATE_ADD(@date, INTERVAL 1 DAY))"
)


class BillingExportConfig(BaseModel):
    """A gcp.billing_export step as written in a template."""

    model_config = ConfigDict(extra="forbid")

    table: WritableTable = Field(
        SCHEMA, pattern=TABLE_NAME_PATTERN, description="destination table of the tenant"
    )


def _stored_integration(integration: Integration) -> tuple[GcpSettings, GcpServiceAccount]:
    """The integration's settings and key file as their models (both were checked when it was set up)."""
    try:
        settings = GcpSettings.model_validate(integration.settings)
        account = GcpServiceAccount.model_validate_json(integration.credential.get_secret_value())
    except ValidationError:
        raise TerminalError(
            f"the gcp integration of {integration.org_slug} no longer holds a usable key file and export"
            " table; set it up again",
            code="invalid_credential",
        ) from None
    return settings, account


def _run_day(ctx: StepContext) -> dt.date:
    value = ctx.params.get("date")
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ConfigurationError(f"step {ctx.step.step_id}: the run has no date to copy")
    return value


@processor("gcp.billing_export", config=BillingExportConfig)
def copy_billing_export(ctx: StepContext, config: BillingExportConfig) -> StepResult:
    """Replace the run's day in the destination with the same day of the tenant's billing export.

    Without a gcp integration, the day's rows the tenant uploaded into the destination are the day.
    """
    day = _run_day(ctx)
    rt, tenant = ctx.runtime, ctx.tenant_id
    try:
        integration = read_integration(rt, tenant, "gcp")
    except IntegrationMissing:
        return use_uploaded_rows(
            ctx,
            table=config.table,
            where=DAY_OF_EXPORT,
            period=str(day),
            missing="no gcp integration",
            instead=integration_setup(tenant, "gcp"),
        )
    settings, account = _stored_integration(integration)
    source = ExportTable(*settings.table_parts())
    schema = load_schema("tenant", SCHEMA).model_copy(update={"name": config.table})
    ctx.warehouse.create_table(tenant, schema)
    if uses_platform_engine(rt.settings):
        outcome = copy_within_engine(ctx.warehouse, rt.settings, tenant, schema, source, day)
    else:
        key = account.info()
        client = tenant_bigquery_client(key)
        try:
            outcome = copy_from_tenant_project(ctx.warehouse, tenant, schema, source, day, client)
        finally:
            client.close()
    return StepResult(rows_processed=outcome.rows, details=outcome.details)
