"""The control dataset itself: the tables it holds, how SQL names one, and whether they all exist.

Each table's SQL lives in the repository module named for it (`organizations`, `subscriptions`, `api_keys`,
`rate_windows`, ...); they all name their table through `control_ref`.
"""

from __future__ import annotations

from common.runtime import Runtime
from common.warehouse.sql import table_ref

CONTROL_TABLES = (
    "org_profiles", "org_subscriptions", "org_api_keys", "org_integration_credentials", "tenant_keysets",
    "org_rate_windows",
    "org_schedules", "schedule_dispatches", "schedule_dispatch_chunks", "bulk_runs", "bulk_run_tenants",
    "org_notification_settings", "notification_deliveries",
)  # fmt: skip


def control_ref(rt: Runtime, table: str) -> str:
    """`control_dataset`.`table`, quoted for GoogleSQL."""
    return table_ref(rt.settings.control_dataset, table)


def is_bootstrapped(rt: Runtime) -> bool:
    """Whether every control table exists (a platform bootstrapped by an older release lacks the tables
    added since: bootstrapping again creates just those)."""
    dataset = rt.settings.control_dataset
    # One lookup per control table, not a listing: in DuckDB a listing reads every tenant's tables too.
    return rt.warehouse.dataset_exists(dataset) and all(
        rt.warehouse.table_exists(dataset, table) for table in CONTROL_TABLES
    )
