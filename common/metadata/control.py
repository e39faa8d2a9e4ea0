"""Reads and writes of the control dataset: organisations, subscriptions, API keys, credentials."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.runtime import Runtime
from common.warehouse.sql import table_ref

CONTROL_TABLES = (
    "org_profiles", "org_subscriptions", "org_api_keys", "org_integration_credentials", "tenant_keysets",
    "org_usage", "org_rate_windows",
    "org_schedules", "schedule_dispatches",
)  # fmt: skip


def control_ref(rt: Runtime, table: str) -> str:
    return table_ref(rt.settings.control_dataset, table)


def is_bootstrapped(rt: Runtime) -> bool:
    """Whether every control table exists."""
    dataset = rt.settings.control_dataset
    present = set(rt.warehouse.list_tables(dataset)) if rt.warehouse.dataset_exists(dataset) else set()
    return set(CONTROL_TABLES) <= present


def get_profile(rt: Runtime, org_slug: str) -> dict[str, Any] | None:
    rows = rt.warehouse.query(
        f"SELECT * FROM {control_ref(rt, 'org_profiles')} WHERE org_slug = @org ORDER BY created_at DESC LIMIT 1",
        {"org": org_slug},
    )
    return rows[0] if rows else None


def active_org_slugs(rt: Runtime, wanted: Sequence[str] | None = None) -> list[str]:
    """Active organisations, sorted; only those of `wanted` when given (one query either way)."""
    only = "" if wanted is None else " AND org_slug IN UNNEST(@orgs)"
    rows = rt.warehouse.query(
        f"SELECT DISTINCT org_slug FROM {control_ref(rt, 'org_profiles')} WHERE status = 'ACTIVE'{only}"
        " ORDER BY org_slug",
        None if wanted is None else {"orgs": list(wanted)},
    )
    return [r["org_slug"] for r in rows]
