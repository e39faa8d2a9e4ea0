"""source.files: load a tenant's billing files (CSV, NDJSON, Parquet; local or gs://) into a raw table.

Shared by every file-based provider (aws, azure, the FOCUS import). The location is the step's `uri` when one
is given (a request may set it through an overridable variable), else a setting of the tenant's integration
of the step's `integration` provider: the step's `location_setting`, or the setting the provider registered
with `register_file_provider` (its package's processors module does: aws `cur_location`, azure
`export_location`). The raw table is replaced whole by each load, so a redelivered step leaves what one load
leaves. Every column is STRING; later SQL steps type costs and dates with SAFE_CAST.

With no `uri` and no integration to read the location from, the rows the tenant uploaded into the raw table
are the load: those of the run's period (`period_where`) must be there, or the run fails saying both ways
to provide them (`common.processors.uploaded`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from common.errors import ConfigurationError, TerminalError
from common.metadata.integrations import IntegrationMissing, read_integration
from common.processors.registry import StepContext, StepResult, processor
from common.processors.uploaded import integration_setup, use_uploaded_rows
from common.sources.files import ColumnNames, Format, read_location
from common.tenancy import WritableTable
from common.types import COLUMN_NAME_PATTERN, TABLE_NAME_PATTERN, TableName

IDENT = TABLE_NAME_PATTERN
COLUMN = COLUMN_NAME_PATTERN
# provider → the setting of its integration that says where its billing files are
_LOCATION_SETTINGS: dict[str, str] = {}


def register_file_provider(provider: str, location_setting: str) -> None:
    """Let source.files read `provider`'s files from its integration's `location_setting` (on import)."""
    if _LOCATION_SETTINGS.get(provider, location_setting) != location_setting:
        raise ConfigurationError(f"file provider {provider} registered twice with different settings")
    _LOCATION_SETTINGS[provider] = location_setting


def file_providers() -> list[str]:
    """Providers whose integration says where their files are, sorted."""
    return sorted(_LOCATION_SETTINGS)


class FileSourceConfig(BaseModel):
    """A source.files step as written in a template."""

    model_config = ConfigDict(extra="forbid")

    table: WritableTable = Field(pattern=IDENT, description="tenant raw table, replaced whole by each load")
    integration: str | None = Field(
        None, description="provider whose integration settings give the location when `uri` is empty"
    )
    location_setting: TableName | None = Field(
        None, description="default: the provider's file location setting"
    )
    uri: str = Field("", max_length=2048, description="file or folder; overrides the integration's location")
    format: Format = "auto"
    column_names: ColumnNames = "snake_case"
    required_columns: list[str] = Field(default_factory=list)
    optional_columns: list[str] = Field(default_factory=list)
    period_where: str | None = Field(
        None,
        max_length=4000,
        description="predicate (using the run's variables, e.g. @date) selecting the run's period in the raw"
        " table: the uploaded rows that stand in for the load when there is neither `uri` nor an integration",
    )

    @field_validator("required_columns", "optional_columns")
    @classmethod
    def _column_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not re.fullmatch(COLUMN, name)]
        if bad:
            raise ValueError(f"not column names: {', '.join(map(repr, bad))}")
        return value

    @field_validator("integration")
    @classmethod
    def _a_file_provider(cls, value: str | None) -> str | None:
        if value is not None and value not in _LOCATION_SETTINGS:
            known = ", ".join(file_providers())
            raise ValueError(f"must name a provider whose integration holds its files: {known}")
        return value

    def setting_name(self) -> str | None:
        """The integration setting that holds the location: the step's, else the provider's own."""
        if self.integration is None:
            return None
        return self.location_setting or _LOCATION_SETTINGS.get(self.integration)


def source_location(ctx: StepContext, config: FileSourceConfig) -> str:
    """The step's `uri`, else the location stored in the tenant's integration settings."""
    if config.uri.strip():
        return config.uri.strip()
    setting = config.setting_name()
    if config.integration is None or setting is None:
        raise ConfigurationError(
            f"step {ctx.step.step_id}: give `uri` or `integration` to say where the files are"
        )
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


def _uploaded(ctx: StepContext, config: FileSourceConfig, missing: str) -> StepResult:
    """The period's uploaded rows of the raw table, or NoSourceData naming both ways to provide them."""
    date = ctx.params.get("date")
    period = f"the period of {date}" if date is not None else "this run"
    if config.integration is not None:
        instead = f"{integration_setup(ctx.tenant_id, config.integration)} or pass source_uri"
    else:
        instead = "pass source_uri (a file or folder, gs:// or under the platform's source roots)"
    return use_uploaded_rows(
        ctx, table=config.table, where=config.period_where, period=period, missing=missing, instead=instead
    )


@processor("source.files", config=FileSourceConfig)
def load_files(ctx: StepContext, config: FileSourceConfig) -> StepResult:
    """Read every file of the location and replace the tenant's raw table with their rows.

    With neither a `uri` nor an integration, keep the period's rows the tenant uploaded into the table.
    """
    try:
        location = source_location(ctx, config)
    except IntegrationMissing:
        return _uploaded(ctx, config, f"no {config.integration} integration")
    except ConfigurationError:
        if config.integration is not None or config.uri.strip():
            raise
        return _uploaded(ctx, config, "no source_uri")
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
