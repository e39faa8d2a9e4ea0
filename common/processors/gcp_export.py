"""gcp.billing_export: copy one UTC day (the run's `date`) of the tenant's billing export into its dataset.

The export table is the gcp integration's `billing_export_table` (project.dataset.table). Re-running a day
replaces that day, so the destination never holds a row twice (common/sources/gcp_export.py says how the
export is reached in each mode).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from common.errors import ConfigurationError
from common.metadata.schemas import load_schema
from common.processors.file_sources import step_config
from common.processors.registry import StepContext, StepResult, processor
from common.services.integrations import read_integration
from common.sources.gcp_export import (
    ExportTable,
    copy_from_tenant_project,
    copy_within_engine,
    tenant_bigquery_client,
    uses_platform_engine,
)
from common.tenancy import WritableTable

SCHEMA = "gcp_billing_export_v1"


class BillingExportConfig(BaseModel):
    """A gcp.billing_export step as written in a template."""

    model_config = ConfigDict(extra="forbid")

    table: WritableTable = Field(
        SCHEMA, pattern=r"^[a-z][a-z0-9_]{0,63}$", description="destination table of the tenant"
    )


def _run_day(ctx: StepContext) -> dt.date:
    value = ctx.params.get("date")
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ConfigurationError(f"step {ctx.step.step_id}: the run has no date to copy")
    return value


@processor("gcp.billing_export")
def copy_billing_export(ctx: StepContext) -> StepResult:
    """Replace the run's day in the destination with the same day of the tenant's billing export."""
    config: BillingExportConfig = step_config(ctx, BillingExportConfig)
    day = _run_day(ctx)
    rt, tenant = ctx.runtime, ctx.tenant_id
    integration = read_integration(rt, tenant, "gcp")
    source = ExportTable(*integration.parsed_settings().table_parts())  # type: ignore[attr-defined]
    schema = load_schema("tenant", SCHEMA).model_copy(update={"name": config.table})
    ctx.warehouse.create_table(tenant, schema)
    if uses_platform_engine(rt.settings):
        outcome = copy_within_engine(ctx.warehouse, rt.settings, tenant, schema, source, day)
    else:
        key = integration.parsed_credential().info()  # type: ignore[union-attr]
        client = tenant_bigquery_client(key)
        try:
            outcome = copy_from_tenant_project(ctx.warehouse, tenant, schema, source, day, client)
        finally:
            client.close()
    return StepResult(rows_processed=outcome.rows, details=outcome.details)
