"""The repository of `org_subscriptions` and of the plans its rows are copied from (configs/plans.yml).

A subscription row holds an organisation's plan and limits; the newest row of an organisation is its current
one (an operator may change it). Onboarding replaces the org's rows with a copy of the chosen plan.
Statements that must check a limit atomically with their own write (the quota admission) embed the
fragments `current_rows_sql` and `current_limit_sql`, so which row is current is decided here alone.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Literal, TypedDict, get_args

import yaml

from common.metadata.control_dataset import control_ref
from common.runtime import Runtime
from common.settings import CONFIGS_DIR
from common.warehouse.base import Statement

TABLE = "org_subscriptions"
PLANS_FILE = CONFIGS_DIR / "plans.yml"

Limit = Literal["max_runs_per_day", "max_concurrent_runs", "max_templates"]
LIMITS: tuple[Limit, ...] = get_args(Limit)
_COLUMN_EXPRESSION = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


class PlanLimits(TypedDict):
    """The limits of one plan."""

    max_runs_per_day: int
    max_concurrent_runs: int
    max_templates: int


@lru_cache(maxsize=1)
def plans() -> dict[str, PlanLimits]:
    """Subscription plans from configs/plans.yml, by name."""
    return yaml.safe_load(PLANS_FILE.read_text())


def replace_statements(
    rt: Runtime, org_slug: str, plan: str, limits: PlanLimits, *, now: dt.datetime
) -> list[Statement]:
    """Statements making `plan` with `limits` the org's only subscription row, for the caller's transaction."""
    table = control_ref(rt, TABLE)
    return [
        (f"DELETE FROM {table} WHERE org_slug = @org", {"org": org_slug}),
        (
            (
                f"INSERT INTO {table} (org_slug, plan, max_runs_per_day, max_concurrent_runs, max_templates,"
                " created_at) VALUES (@org, @plan, @runs, @concurrent, @templates, @now)"
            ),
            {
                "org": org_slug,
                "plan": plan,
                "runs": limits["max_runs_per_day"],
                "concurrent": limits["max_concurrent_runs"],
                "templates": limits["max_templates"],
                "now": now,
            },
        ),
    ]


def current_rows_sql(rt: Runtime) -> str:
    """A SELECT of the current subscription of each organisation in the array parameter `@orgs`.

    Columns: org_slug, plan and every limit. Meant as the body of a WITH clause of a larger read.
    """
    return (
        f"SELECT org_slug, plan, {', '.join(LIMITS)} FROM {control_ref(rt, TABLE)}"
        " WHERE org_slug IN UNNEST(@orgs)"
        " QUALIFY ROW_NUMBER() OVER (PARTITION BY org_slug ORDER BY created_at DESC) = 1"
    )


def current_limit_sql(rt: Runtime, limit: Limit, org_column: str) -> str:
    """A scalar subquery: `limit` of the current subscription of the org named by `org_column`, else NULL.

    `org_column` is a column of the enclosing statement (e.g. `u.org_slug`), never a value.
    """
    if limit not in LIMITS:
        raise ValueError(f"no plan limit {limit!r}")
    if not _COLUMN_EXPRESSION.fullmatch(org_column):
        raise ValueError(f"not a column reference: {org_column!r}")
    return (
        f"(SELECT s.{limit} FROM {control_ref(rt, TABLE)} AS s WHERE s.org_slug = {org_column}"
        " ORDER BY s.created_at DESC LIMIT 1)"
    )
