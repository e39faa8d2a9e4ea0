"""What organisations have used of their plans, read from the runs they started: no counters to update.

Each tenant's own `pipeline_runs` is the record of what it ran: a run's first record (PENDING) is written
when the run is admitted, and a refused run writes none. So runs today, templates ever run and runs in
flight are counts over those records, and admitting a run changes nothing but the run record itself —
no statement on a table shared by every tenant. What the limits are and what a refusal says is the quota
service's business (`common.services.quotas`).

Cost: one query per call, whatever the number of tenants up to `common.services.quotas`'
MAX_TENANTS_PER_ADMISSION (a UNION ALL over their tables). Runs today and runs in flight read only the
partitions of `recorded_at` since the start of the active-run horizon; the templates ever run read one
short column of the whole table, a few hundred bytes per run (BigQuery bills 10 MB per table and query at
the least, which this stays under for decades of runs).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.metadata import subscriptions
from common.runtime import Runtime
from common.warehouse.sql import table_ref


def _tenant_usage_sql(tenant: str, index: int) -> str:
    runs = table_ref(tenant, "pipeline_runs")
    return f"""
        SELECT @tenant_{index} AS org_slug,
               (SELECT COUNT(DISTINCT pipeline_logging_id) FROM {runs}
                 WHERE recorded_at >= @day_start AND status = 'PENDING') AS runs_today,
               (SELECT ARRAY_AGG(DISTINCT CONCAT(provider, '/', domain, '/', template)) FROM {runs}
                 WHERE status = 'PENDING' AND template IS NOT NULL) AS templates_used,
               (SELECT COUNTIF(status IN ('PENDING', 'RUNNING')) FROM (
                  SELECT status FROM {runs} WHERE recorded_at >= @since AND start_time >= @since
                  QUALIFY ROW_NUMBER() OVER (PARTITION BY pipeline_logging_id ORDER BY seq DESC) = 1
               )) AS active"""


def read_standings(
    rt: Runtime, tenants: list[str], *, day: dt.date, since: dt.datetime
) -> list[dict[str, Any]]:
    """Per organisation, in one query: its current subscription and what it used.

    A row per tenant id given: org_slug, plan and the limits (NULL without a subscription), runs_today (runs
    admitted on `day`, UTC), templates_used (`provider/domain/template` of every run it ever started) and
    active — its runs started since `since` whose latest record is PENDING or RUNNING.
    """
    day_start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    parts = [_tenant_usage_sql(tenant, index) for index, tenant in enumerate(tenants)]
    params: dict[str, Any] = {f"tenant_{index}": tenant for index, tenant in enumerate(tenants)}
    return rt.warehouse.query(
        f"""
        WITH subs AS ({subscriptions.current_rows_sql(rt)}),
        used AS ({" UNION ALL ".join(parts)})
        SELECT u.org_slug, s.plan, s.max_runs_per_day, s.max_concurrent_runs, s.max_templates,
               u.runs_today, u.templates_used, u.active
        FROM used AS u LEFT JOIN subs AS s ON s.org_slug = u.org_slug
        """,
        params | {"orgs": tenants, "day_start": day_start, "since": since},
    )
