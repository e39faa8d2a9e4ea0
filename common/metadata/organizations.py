"""The repository of `org_profiles`: one row per onboarded organisation. The only module with its SQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.warehouse.base import Statement

TABLE = "org_profiles"


def get_profile(rt: Runtime, org_slug: str) -> dict[str, Any] | None:
    """The organisation's newest profile row, or None when it was never onboarded."""
    rows = rt.warehouse.query(
        f"SELECT * FROM {control_ref(rt, TABLE)} WHERE org_slug = @org ORDER BY created_at DESC LIMIT 1",
        {"org": org_slug},
    )
    return rows[0] if rows else None


def active_org_slugs(rt: Runtime, wanted: Sequence[str] | None = None) -> list[str]:
    """Active organisations, sorted; only those of `wanted` when given (one query either way)."""
    only = "" if wanted is None else " AND org_slug IN UNNEST(@orgs)"
    rows = rt.warehouse.query(
        f"SELECT DISTINCT org_slug FROM {control_ref(rt, TABLE)} WHERE status = 'ACTIVE'{only}"
        " ORDER BY org_slug",
        None if wanted is None else {"orgs": list(wanted)},
    )
    return [r["org_slug"] for r in rows]


def insert_profile_statement(
    rt: Runtime, org_slug: str, *, company_name: str, admin_email: str, plan: str, now: dt.datetime
) -> Statement:
    """The INSERT of an ACTIVE profile whose dataset is the org's own, for the caller's transaction."""
    return (
        (
            f"INSERT INTO {control_ref(rt, TABLE)}"
            " (org_slug, company_name, admin_email, subscription_plan, status, dataset_id, created_at, updated_at)"
            " VALUES (@org, @company, @email, @plan, 'ACTIVE', @org, @now, @now)"
        ),
        {"org": org_slug, "company": company_name, "email": admin_email, "plan": plan, "now": now},
    )
