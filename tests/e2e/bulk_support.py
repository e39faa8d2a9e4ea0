"""What the fan-out and bulk-run suites share: tenants that can or cannot run a template, made cheaply."""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.metadata.schemas import load_schema
from common.runtime import Runtime

FILLER: dict[str, Any] = {
    "STRING": "x", "INTEGER": 0, "INT64": 0, "FLOAT": 0.0, "FLOAT64": 0.0, "BOOLEAN": False, "BOOL": False,
    "TIMESTAMP": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "DATE": dt.date(2026, 1, 1),
}  # fmt: skip
# One row of a standard usage cost export, as a tenant uploads it (NDJSON).
EXPORT_ROW = (
    b'{"billing_account_id": "01AB23-45CD67-89EF01", "cost": 1.25, "currency": "USD",'
    b' "usage_start_time": "2026-11-21T10:00:00Z", "usage_end_time": "2026-11-21T11:00:00Z",'
    b' "service": {"id": "6F81-5844-456A", "description": "Compute Engine"}}\n'
)


def give_integration(rt: Runtime, org: str, provider: str) -> None:
    """A stored integration row of `provider` for `org`: the presence a fan-out looks for, no credential.

    Written straight into the control table (every required column filled), so no provider is called.
    """
    schema = load_schema("control", "org_integration_credentials")
    row = {f.name: FILLER[f.type] for f in schema.fields if f.mode == "REQUIRED"}
    rt.warehouse.insert_rows(
        rt.settings.control_dataset, schema.name, [row | {"org_slug": org, "provider": provider}]
    )
