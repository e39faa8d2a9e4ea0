"""source.files: load a tenant's billing files (CSV, NDJSON, Parquet; local or gs://) into a raw table.

The location is the step's `uri` when one is given (a request may set it through an overridable variable),
else the tenant's integration setting (aws `cur_location`, azure `export_location`). The raw table is
replaced whole by each load, so a redelivered step leaves what one load leaves. Every column is STRING;
later SQL steps type costs and dates with SAFE_CAST.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.errors import ConfigurationError, TerminalError
from common.processors.registry import StepContext, StepResult, processor
from common.services.integrations import read_integration
from common.sources.files import ColumnNames, Format, read_location
from common.tenancy import WritableTable

IDENT = r"^[a-z][a-z0-9_]{0,63}$"
COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,299}$"
# The setting of each provider's integration that says where its files are.
LOCATION_SETTINGS = {"aws": "cur_location", "azure": "export_location"}


class FileSourceConfig(BaseModel):
    """A source.files step as written in a template."""

    model_config = ConfigDict(extra="forbid")

    table: WritableTable = Field(pattern=IDENT, description="tenant raw table, replaced whole by each load")
    integration: Literal["aws", "azure", "gcp"] | None = Field(
        None, description="provider whose integration settings give the location when `uri` is empty"
    )
    location_setting: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    uri: str = Field("", max_length=2048, description="file or folder; overrides the integration's location")
    format: Format = "auto"
    column_names: ColumnNames = "snake_case"
    required_columns: list[str] = Field(default_factory=list)
    optional_columns: list[str] = Field(default_factory=list)

    @field_validator("required_columns", "optional_columns")
    @classmethod
    def _column_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(COLUMN, name)]
        if bad:
            raise ValueError(f"not column names: {', '.join(map(repr, bad))}")
        return value


def step_config(ctx: StepContext, model: type[BaseModel]) -> Any:
    """The step's configuration as `model`, or a terminal error naming what is wrong (never a crash)."""
    try:
        return model.model_validate(ctx.config)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"step {ctx.step.step_id} ({ctx.step.ps_type}): {problems}") from None


def source_location(ctx: StepContext, config: FileSourceConfig) -> str:
    """The step's `uri`, else the location stored in the tenant's integration settings."""
    if config.uri.strip():
        return config.uri.strip()
    if config.integration is None:
        raise ConfigurationError(
            f"step {ctx.step.step_id}: give `uri` or `integration` to say where the files are"
        )
    setting = config.location_setting or LOCATION_SETTINGS.get(config.integration)
    if setting is None:
        raise ConfigurationError(f"step {ctx.step.step_id}: name the integration's `location_setting`")
    location = read_integration(ctx.runtime, ctx.tenant_id, config.integration).settings.get(setting)
    if not isinstance(location, str) or not location.strip():
        raise TerminalError(
            f"the {config.integration} integration of {ctx.tenant_id} has no {setting}; set it with"
            f" POST /api/v1/integrations/{ctx.tenant_id}/{config.integration}/setup or pass a source uri",
            code="source_not_configured",
        )
    return location.strip()


def _gcs_reader(ctx: StepContext) -> Any:
    """The instance's Cloud Storage reader, created on first use and kept for later steps."""
    from common.sources.gcs import GcsReader

    caches = ctx.runtime.caches
    if "gcs_reader" not in caches:
        caches["gcs_reader"] = GcsReader.from_settings(ctx.runtime.settings)
    return caches["gcs_reader"]


@processor("source.files")
def load_files(ctx: StepContext) -> StepResult:
    """Read every file of the location and replace the tenant's raw table with their rows."""
    config: FileSourceConfig = step_config(ctx, FileSourceConfig)
    location = source_location(ctx, config)
    loaded = read_location(
        location,
        ctx.runtime.settings,
        declared=config.format,
        column_names=config.column_names,
        required=config.required_columns,
        optional=config.optional_columns,
        gcs=lambda: _gcs_reader(ctx),
        tenant_id=ctx.tenant_id,
    )
    rows = ctx.warehouse.load_arrow(ctx.tenant_id, config.table, loaded.table, mode="replace")
    return StepResult(
        rows_processed=rows,
        details={
            "table": config.table,
            "files": len(loaded.files),
            "columns": loaded.table.num_columns,
            "location": location,
        },
    )
