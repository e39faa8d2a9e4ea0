"""The repository of `org_rate_windows`: requests each instance admitted per tenant and minute. Its SQL only.

Append-only: an instance INSERTs what it admitted since its last sync, never updates a row; old windows are
deleted in bulk. How the counts limit requests is `common.services.rate_limits`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

from common.metadata.control_dataset import control_ref
from common.runtime import Runtime

TABLE = "org_rate_windows"
ROWS_PER_INSERT = 1000  # 3 parameters a row stays far below BigQuery's 10,000 parameters per query


class WindowHits(NamedTuple):
    """Requests of one tenant an instance admitted in the window starting at `window_start`."""

    org_slug: str
    window_start: dt.datetime
    hits: int


def append(rt: Runtime, instance_id: str, rows: Sequence[WindowHits], *, recorded_at: dt.datetime) -> None:
    """INSERT the rows, in their order, as `instance_id`'s: one statement per ROWS_PER_INSERT rows."""
    table = control_ref(rt, TABLE)
    for start in range(0, len(rows), ROWS_PER_INSERT):
        part = rows[start : start + ROWS_PER_INSERT]
        params: dict[str, object] = {"instance": instance_id, "now": recorded_at}
        values = []
        for index, row in enumerate(part):
            params |= {
                f"org_{index}": row.org_slug,
                f"window_{index}": row.window_start,
                f"hits_{index}": row.hits,
            }
            values.append(f"(@org_{index}, @window_{index}, @instance, @hits_{index}, @now)")
        rt.warehouse.execute(
            f"INSERT INTO {table} (org_slug, window_start, instance_id, hits, recorded_at)"
            f" VALUES {', '.join(values)}",
            params,
        )


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
