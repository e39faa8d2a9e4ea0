"""The repository of `org_usage`: one row of quota counters per organisation. The only module with its SQL.

A row counts the runs admitted on `usage_date` (a row of an earlier day counts 0 for today), the templates the
organisation has ever run, and the ids of its last admissions (so a racing batch can tell which rows it
changed). What the limits are and what a refusal says is the quota service's business
(`common.services.quotas`); the statements here take the limits they need as parameters, or read them from
the current subscription in the same statement so a check and its write are atomic.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from common.metadata import subscriptions
from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.types import utcnow
from common.warehouse.sql import table_ref

TABLE = "org_usage"


def _usage(rt: Runtime) -> str:
    return control_ref(rt, TABLE)


def start_counters(rt: Runtime, org_slug: str, *, now: dt.datetime | None = None) -> None:
    """Start an organisation's counters at zero (onboarding); replaces any row a failed attempt left."""
    now = now or utcnow()
    rt.warehouse.run_atomically(
        [
            (f"DELETE FROM {_usage(rt)} WHERE org_slug = @org", {"org": org_slug}),
            (
                (
                    f"INSERT INTO {_usage(rt)} (org_slug, usage_date, runs_started, templates_used,"
                    " recent_admissions, created_at, updated_at)"
                    " VALUES (@org, @day, 0, @none, @none, @now, @now)"
                ),
                {"org": org_slug, "day": now.date(), "none": [], "now": now},
            ),
        ]
    )


def read_standings(
    rt: Runtime, tenants: list[str], *, day: dt.date, since: dt.datetime
) -> list[dict[str, Any]]:
    """Per organisation, in one query: its current subscription, its counters and its runs in flight.

    A row per tenant id given (and more should a tenant hold several counter rows): org_slug, plan and the
    limits (NULL without a subscription), has_usage, runs_today (for `day`), templates_used, and active —
    the runs of the tenant's own `pipeline_runs` started since `since` whose latest record is PENDING or
    RUNNING.
    """
    active = " UNION ALL ".join(
        f"""SELECT tenant_id, COUNTIF(status IN ('PENDING', 'RUNNING')) AS active FROM (
              SELECT tenant_id, status FROM {table_ref(tenant, "pipeline_runs")} WHERE start_time >= @since
              QUALIFY ROW_NUMBER() OVER (PARTITION BY pipeline_logging_id ORDER BY seq DESC) = 1
            ) GROUP BY tenant_id"""
        for tenant in tenants
    )
    return rt.warehouse.query(
        f"""
        WITH subs AS ({subscriptions.current_rows_sql(rt)}),
        active AS ({active})
        SELECT wanted AS org_slug, s.plan, s.max_runs_per_day, s.max_concurrent_runs, s.max_templates,
               u.org_slug IS NOT NULL AS has_usage,
               IF(u.usage_date = @day, u.runs_started, 0) AS runs_today,
               u.templates_used, IFNULL(a.active, 0) AS active
        FROM UNNEST(@orgs) AS wanted
        LEFT JOIN subs AS s ON s.org_slug = wanted
        LEFT JOIN {_usage(rt)} AS u ON u.org_slug = wanted
        LEFT JOIN active AS a ON a.tenant_id = wanted
        """,
        {"orgs": tenants, "day": day, "since": since},
    )


def create_missing(rt: Runtime, tenants: list[str], *, now: dt.datetime) -> None:
    """Zero counter rows for those of `tenants` that have none (one statement for all)."""
    rt.warehouse.execute(
        f"""
        INSERT INTO {_usage(rt)} (org_slug, usage_date, runs_started, templates_used, recent_admissions,
                                  created_at, updated_at)
        SELECT org, @day, 0, @none, @none, @now, @now FROM UNNEST(@orgs) AS org
        WHERE org NOT IN (SELECT org_slug FROM {_usage(rt)})
        """,
        {"orgs": tenants, "day": now.date(), "none": [], "now": now},
    )


def reserve(
    rt: Runtime, tenants: list[str], template: str, admission_id: str, *, now: dt.datetime, recent: int,
    default_runs: int, default_templates: int,
) -> int:  # fmt: skip
    """The conditional UPDATE: take a slot for each organisation that still has room; rows changed.

    A row with room has fewer runs today than its subscription's max_runs_per_day, and either counts
    `template` already or fewer templates than max_templates (the defaults stand in for an org without a
    subscription). Each changed row gains one run today, the template, and `admission_id` among its last
    `recent` admission ids.
    """
    return rt.warehouse.execute(
        f"""
        UPDATE {_usage(rt)} AS u
        SET runs_started = IF(u.usage_date = @day, u.runs_started, 0) + 1,
            usage_date = @day,
            templates_used = IF(@template IN UNNEST(u.templates_used), u.templates_used,
                                ARRAY_CONCAT(u.templates_used, [@template])),
            recent_admissions = IF(ARRAY_LENGTH(u.recent_admissions) >= @recent, [@admission_id],
                                   ARRAY_CONCAT(u.recent_admissions, [@admission_id])),
            updated_at = @now
        WHERE u.org_slug IN UNNEST(@orgs)
          AND IF(u.usage_date = @day, u.runs_started, 0) < IFNULL(
                {subscriptions.current_limit_sql(rt, "max_runs_per_day", "u.org_slug")}, @default_runs)
          AND (@template IN UNNEST(u.templates_used) OR ARRAY_LENGTH(u.templates_used) < IFNULL(
                {subscriptions.current_limit_sql(rt, "max_templates", "u.org_slug")}, @default_templates))
        """,
        {"orgs": tenants, "template": template, "admission_id": admission_id, "recent": recent,
         "day": now.date(), "now": now, "default_runs": default_runs, "default_templates": default_templates},
    )  # fmt: skip


def read_back(
    rt: Runtime, tenants: list[str], admission_id: str, *, day: dt.date
) -> dict[str, dict[str, Any]]:
    """Per organisation: whether its row holds `admission_id` (admitted), its runs on `day`, its templates."""
    rows = rt.warehouse.query(
        f"SELECT org_slug, @admission_id IN UNNEST(recent_admissions) AS admitted,"
        f" IF(usage_date = @day, runs_started, 0) AS runs_today, templates_used"
        f" FROM {_usage(rt)} WHERE org_slug IN UNNEST(@orgs)",
        {"orgs": tenants, "admission_id": admission_id, "day": day},
    )
    return {row["org_slug"]: row for row in rows}


def release(rt: Runtime, tenants: list[str], *, day: dt.date, now: dt.datetime) -> int:
    """Give back one run of `day` to each organisation (never below zero); rows changed."""
    return rt.warehouse.execute(
        f"UPDATE {_usage(rt)} SET runs_started = runs_started - 1, updated_at = @now"
        " WHERE org_slug IN UNNEST(@orgs) AND usage_date = @day AND runs_started > 0",
        {"orgs": tenants, "day": day, "now": now},
    )
