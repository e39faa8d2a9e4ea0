"""Tenant id rules and the names derived from them. Identifiers only ever come from here."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from common.errors import BadRequest
from common.types import SEGMENT_PATTERN, TABLE_NAME_PATTERN, TEMPLATE_NAME_PATTERN, TENANT_ID_PATTERN

TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
TABLE_NAME_RE = re.compile(TABLE_NAME_PATTERN)
TEMPLATE_SEGMENT_RE = re.compile(SEGMENT_PATTERN)
TEMPLATE_NAME_RE = re.compile(TEMPLATE_NAME_PATTERN)

# Tables of a tenant's dataset that the platform owns; tenants read them but never upload into them.
METADATA_TABLES = frozenset({"pipeline_runs", "step_logs", "dq_results"})


def not_a_metadata_table(value: str) -> str:
    """A pydantic field validator: refuse a step writing into a table the platform maintains."""
    if value in METADATA_TABLES:
        raise ValueError(f"{value} is maintained by the platform")
    return value


# A tenant table a step may write: never one the platform maintains.
WritableTable = Annotated[str, AfterValidator(not_a_metadata_table)]


def validate_tenant_id(value: str, *, field: str = "org_slug") -> str:
    """Return the tenant id unchanged, or refuse it (400) naming the field."""
    if not isinstance(value, str) or not TENANT_ID_RE.fullmatch(value):
        raise BadRequest(f"{field} must match {TENANT_ID_PATTERN}", code="invalid_tenant_id")
    return value


def validate_table_name(value: str) -> str:
    """A user-supplied table name: lower-case letters, digits and underscores only."""
    if not isinstance(value, str) or not TABLE_NAME_RE.fullmatch(value):
        raise BadRequest(f"table name must match {TABLE_NAME_PATTERN}", code="invalid_table_name")
    return value


def validate_template_segment(value: str, what: str) -> str:
    """A provider, domain or template name from a URL: never a path. Template names may hold hyphens."""
    rule = TEMPLATE_NAME_RE if what == "template" else TEMPLATE_SEGMENT_RE
    if not isinstance(value, str) or not rule.fullmatch(value):
        raise BadRequest(f"{what} must match {rule.pattern}", code=f"invalid_{what}")
    return value


def tenant_dataset(tenant_id: str) -> str:
    """The dataset that holds everything of one tenant and nothing of another."""
    return validate_tenant_id(tenant_id, field="tenant_id")
