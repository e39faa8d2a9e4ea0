"""The repository of `notification_deliveries`: the notices the platform mailed on its own. The only module
with its SQL.

A notice (an organisation's welcome, a scheduled run's failure) is claimed before it is sent, with one
insert-if-absent statement keyed by what it is about. A single statement is atomic on both warehouses, so a
message delivered twice, or handled by two instances at once, sends the notice once: only the caller whose
statement wrote the row sends. A send that fails gives its claim back, so a later attempt may try again.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.types import utcnow

TABLE = "notification_deliveries"


def claim(rt: Runtime, notice_id: str, org_slug: str, recipients: Sequence[str]) -> bool:
    """Record that this caller sends notice `notice_id`; False when it is on record already."""
    table = control_ref(rt, TABLE)
    written = rt.warehouse.execute(
        f"INSERT INTO {table} (notice_id, org_slug, recipients, claimed_at)"
        " SELECT @notice_id, @org, @recipients, @now FROM UNNEST([1]) AS one"
        f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE notice_id = @notice_id)",
        {"notice_id": notice_id, "org": org_slug, "recipients": list(recipients), "now": utcnow()},
    )
    return written > 0


def release(rt: Runtime, notice_id: str) -> None:
    """Forget the claim on `notice_id` (its send failed), so another attempt may send it."""
    rt.warehouse.execute(
        f"DELETE FROM {control_ref(rt, TABLE)} WHERE notice_id = @notice_id", {"notice_id": notice_id}
    )
