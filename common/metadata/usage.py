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


def _tenant_records_sql(tenant: str, index: int) -> str:
    # A plain filtered scan per tenant: the counting runs once over the union of them (subqueries or a
    # window in every branch make DuckDB's planning grow with the square of the branches).
    runs = table_ref(tenant, "pipeline_runs")
    return (
        f"SELECT @tenant_{index} AS org_slug, pipeline_logging_id, status, provider, domain, template,"
        f" recorded_at, start_time, seq FROM {runs} WHERE status = 'PENDING' OR recorded_at >= @since"
    )


def read_standings(
    rt: Runtime, tenants: list[str], *, day: dt.date, since: dt.datetime
) -> list[dict[str, Any]]:
    """Per organisation, in one query: its current subscription and what it used.

    A row per tenant id given: org_slug, plan and the limits (NULL without a subscription), runs_today (runs
    admitted on `day`, UTC), templates_used (`provider/domain/template` of every run it ever started) and
    active — its runs started since `since` whose latest record is PENDING or RUNNING.
    """
    day_start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    parts = [_tenant_records_sql(tenant, index) for index, tenant in enumerate(tenants)]
    params: dict[str, Any] = {f"tenant_{index}": tenant for index, tenant in enumerate(tenants)}
    return rt.warehouse.query(
        f"""
        WITH subs AS ({subscriptions.current_rows_sql(rt)}),
        records AS ({" UNION ALL ".join(parts)}),
        today AS (
          SELECT org_slug, COUNT(DISTINCT pipeline_logging_id) AS runs_today FROM records
          WHERE status = 'PENDING' AND recorded_at >= @day_start GROUP BY org_slug
        ),
        used AS (
          SELECT org_slug, ARRAY_AGG(DISTINCT CONCAT(provider, '/', domain, '/', template)) AS templates_used
          FROM records WHERE status = 'PENDING' AND template IS NOT NULL GROUP BY org_slug
        ),
        latest AS (
          SELECT org_slug, status FROM records WHERE recorded_at >= @since AND start_time >= @since
          QUALIFY ROW_NUMBER() OVER (PARTITION BY org_slug, pipeline_logging_id ORDER BY seq DESC) = 1
        ),
        active AS (
          SELECT org_slug, COUNTIF(status IN ('PENDING', 'RUNNING')) AS active FROM latest GROUP BY org_slug
        )
        SELECT o AS org_slug, s.plan, s.max_runs_per_day, s.max_concurrent_runs, s.max_templates,
               COALESCE(t.runs_today, 0) AS runs_today, u.templates_used, COALESCE(a.active, 0) AS active
        FROM UNNEST(@orgs) AS o
        LEFT JOIN subs AS s ON s.org_slug = o
        LEFT JOIN today AS t ON t.org_slug = o
        LEFT JOIN used AS u ON u.org_slug = o
        LEFT JOIN active AS a ON a.org_slug = o
        """,
        params | {"orgs": tenants, "day_start": day_start, "since": since},
    )
