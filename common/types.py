"""Identifier and value types every layer shares: one definition of each rule.

Tenant, table and template identifiers, e-mail addresses and UTC timestamps are `Annotated` types, used alike
by settings, messages, request models, templates and processors. Identifiers built from these are the only
names that ever reach SQL as identifiers (values always travel as query parameters).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

TENANT_ID_PATTERN = r"^[a-z][a-z0-9_]{2,49}$"
TABLE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
# A provider, domain or template name: one path segment, never a path. Template names may hold hyphens, as
# the described system's `bill-sample-export-template` does (CONTRACT §2); providers and domains may not.
SEGMENT_PATTERN = r"^[a-z][a-z0-9_]{0,49}$"
TEMPLATE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
TEMPLATE_PATH_PATTERN = r"^[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_]{0,49}/[a-z][a-z0-9_-]{0,63}$"
EMAIL_PATTERN = r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$"
# A column of a warehouse table, as BigQuery allows it (case kept, at most 300 characters).
COLUMN_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,299}$"
# A template variable (a placeholder name) and a step id inside a template.
VARIABLE_NAME_PATTERN = r"^[a-z_][a-z0-9_]*$"
STEP_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

TenantId = Annotated[str, StringConstraints(pattern=TENANT_ID_PATTERN)]
TableName = Annotated[str, StringConstraints(pattern=TABLE_NAME_PATTERN)]
ProviderName = Annotated[str, StringConstraints(pattern=SEGMENT_PATTERN)]
DomainName = Annotated[str, StringConstraints(pattern=SEGMENT_PATTERN)]
TemplateName = Annotated[str, StringConstraints(pattern=TEMPLATE_NAME_PATTERN)]
# provider/domain/template, as schedules and bulk runs name a template.
TemplatePath = Annotated[str, StringConstraints(pattern=TEMPLATE_PATH_PATTERN)]
Email = Annotated[str, StringConstraints(pattern=EMAIL_PATTERN, max_length=320)]
ColumnName = Annotated[str, StringConstraints(pattern=COLUMN_NAME_PATTERN)]
VariableName = Annotated[str, StringConstraints(pattern=VARIABLE_NAME_PATTERN)]
StepId = Annotated[str, StringConstraints(pattern=STEP_ID_PATTERN)]


def utcnow() -> dt.datetime:
    """Now, aware, in UTC: the one clock every record is stamped with."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """UTC-aware (a warehouse may hand back naive UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def iso_utc(value: dt.datetime) -> str:
    """The ISO 8601 form of a UTC instant every answer uses: `2025-11-15T00:30:00Z`."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[dt.datetime, AfterValidator(as_utc), Field(description="UTC, ISO 8601")]
