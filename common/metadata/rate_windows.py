"""The repository of `org_rate_windows`: requests each instance admitted per tenant and minute. Its SQL only.

Append-only: an instance appends what it admitted since its last sync, never updates a row; old windows are
deleted in bulk (once an hour per instance). How the counts limit requests is `common.services.rate_limits`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

from common.metadata.control_dataset import control_ref
from common.runtime import Runtime

TABLE = "org_rate_windows"


class WindowHits(NamedTuple):
    """Requests of one tenant an instance admitted in the window starting at `window_start`."""

    org_slug: str
    window_start: dt.datetime
    hits: int


def append(rt: Runtime, instance_id: str, rows: Sequence[WindowHits], *, recorded_at: dt.datetime) -> None:
    """Append the rows as `instance_id`'s (`insert_rows`: the Storage Write API on BigQuery, no DML job)."""
    if not rows:
        return
    rt.warehouse.insert_rows(rt.settings.control_dataset, TABLE, [
        {"org_slug": row.org_slug, "window_start": row.window_start, "instance_id": instance_id,
         "hits": row.hits, "recorded_at": recorded_at}
        for row in rows
    ])  # fmt: skip


def hits_of_others(rt: Runtime, instance_id: str, window_start: dt.datetime) -> dict[str, int]:
    """Per tenant, the hits every instance but `instance_id` appended for the window."""
    rows = rt.warehouse.query(
        f"SELECT org_slug, SUM(hits) AS hits FROM {control_ref(rt, TABLE)}"
        " WHERE window_start = @window AND instance_id != @instance GROUP BY org_slug",
        {"window": window_start, "instance": instance_id},
    )
    return {row["org_slug"]: int(row["hits"]) for row in rows}


def delete_before(rt: Runtime, moment: dt.datetime) -> int:
    """Delete the windows that started before `moment`; rows deleted."""
    return rt.warehouse.execute(
        f"DELETE FROM {control_ref(rt, TABLE)} WHERE window_start < @before", {"before": moment}
    )
