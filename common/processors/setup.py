"""setup.*: the steps of the platform's own pipelines (bootstrap, onboarding, dryrun).

The dataset a setup step works on is the pipeline's tenant: the control dataset for bootstrap, the
organisation's dataset for onboarding.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml

from common.errors import ConfigurationError, ConvergenceError
from common.metadata import control
from common.metadata.schemas import load_schema, schema_names
from common.processors.registry import StepContext, StepResult, processor
from common.types import utcnow
from common.settings import CONFIGS_DIR

EMAIL_RE = re.compile(r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")
RESERVED_SLUGS = frozenset({"information_schema", "pg_catalog", "main", "temp", "system", "organizations"})


@lru_cache(maxsize=1)
def plans() -> dict[str, dict[str, int]]:
    """Subscription plans from configs/plans.yml."""
    return yaml.safe_load((CONFIGS_DIR / "plans.yml").read_text())


def _flag(ctx: StepContext, key: str) -> bool:
    name = ctx.config.get(key)
    return bool(ctx.pipeline.variables.get(name)) if name else False


@processor("setup.create_dataset")
def create_dataset(ctx: StepContext) -> StepResult:
    created = ctx.warehouse.create_dataset(ctx.tenant_id, recreate=_flag(ctx, "recreate_variable"))
    return StepResult(details={"dataset": ctx.tenant_id, "created": created})


@processor("setup.create_tables")
def create_tables(ctx: StepContext) -> StepResult:
    scope = ctx.config.get("scope")
    if scope not in ("control", "tenant"):
        raise ConfigurationError("setup.create_tables needs scope control or tenant")
    tables = ctx.config.get("tables") or schema_names(scope)
    recreate = _flag(ctx, "recreate_variable")
    created = [t for t in tables if ctx.warehouse.create_table(ctx.tenant_id, load_schema(scope, t), recreate=recreate)]
    return StepResult(rows_processed=len(created), details={"tables_created": created})


@processor("setup.issue_api_key")
def issue_key(ctx: StepContext) -> StepResult:
    from common.services.auth import issue_api_key

    return StepResult(rows_processed=1, details={"api_key": issue_api_key(ctx.runtime, ctx.tenant_id)})


@processor("setup.register_organization")
def register_organization(ctx: StepContext) -> StepResult:
    rt, org, values = ctx.runtime, ctx.tenant_id, ctx.pipeline.variables
    plan = values["subscription_plan"]
    limits = plans()[plan]
    now = utcnow()
    rt.warehouse.run_atomically(
        [
            (f"DELETE FROM {control.control_ref(rt, 'org_subscriptions')} WHERE org_slug = @org", {"org": org}),
            (
                f"INSERT INTO {control.control_ref(rt, 'org_subscriptions')}"
                " (org_slug, plan, max_runs_per_day, max_concurrent_runs, max_templates, created_at)"
                " VALUES (@org, @plan, @runs, @concurrent, @templates, @now)",
                {"org": org, "plan": plan, "runs": limits["max_runs_per_day"],
                 "concurrent": limits["max_concurrent_runs"], "templates": limits["max_templates"], "now": now},
            ),  # fmt: skip
            (
                f"INSERT INTO {control.control_ref(rt, 'org_profiles')}"
                " (org_slug, company_name, admin_email, subscription_plan, status, dataset_id, created_at, updated_at)"
                " VALUES (@org, @company, @email, @plan, 'ACTIVE', @org, @now, @now)",
                {"org": org, "company": values["company_name"], "email": values["admin_email"],
                 "plan": plan, "now": now},
            ),  # fmt: skip
        ]
    )
    return StepResult(rows_processed=2, details={"org_slug": org, "plan": plan})


@processor("setup.init_usage")
def init_usage(ctx: StepContext) -> StepResult:
    """Start the organisation's quota counters (runs today, templates used) at zero."""
    from common.services.quotas import init_usage as start_counters

    start_counters(ctx.runtime, ctx.tenant_id)
    return StepResult(rows_processed=1, details={"org_slug": ctx.tenant_id})


def _check(name: str, ok: bool, message: str, status_if_bad: str = "failed") -> dict[str, Any]:
    return {"name": name, "status": "passed" if ok else status_if_bad, "message": message}


@processor("setup.dryrun_checks")
def dryrun_checks(ctx: StepContext) -> StepResult:
    """Everything onboarding would need, checked without changing anything."""
    rt, org, values = ctx.runtime, ctx.tenant_id, ctx.pipeline.variables
    checks = [
        _check("org_slug_allowed", org not in RESERVED_SLUGS and org != rt.settings.control_dataset,
               f"{org} is {'reserved' if org in RESERVED_SLUGS else 'allowed'}"),
        _check("admin_email", bool(EMAIL_RE.fullmatch(values["admin_email"])), "admin_email looks like an address"),
        _check("subscription_plan", values["subscription_plan"] in plans(),
               f"plan {values['subscription_plan']} is {'known' if values['subscription_plan'] in plans() else 'unknown'}"),
    ]  # fmt: skip
    try:
        rt.warehouse.ping()
        checks.append(_check("warehouse_reachable", True, f"{rt.warehouse.name} warehouse answers"))
        bootstrapped = control.is_bootstrapped(rt)
        checks.append(_check("platform_bootstrapped", bootstrapped, "control dataset and tables exist"
                             if bootstrapped else "run POST /api/v1/admin/bootstrap first"))  # fmt: skip
        if bootstrapped:
            exists = control.get_profile(rt, org) is not None
            checks.append(_check("org_available", not exists, f"{org} is {'already onboarded' if exists else 'free'}"))
        dataset_exists = rt.warehouse.dataset_exists(org)
        checks.append(_check("dataset", not dataset_exists, f"dataset {org} "
                             + ("exists and would be reused" if dataset_exists else "will be created"), "warning"))
    except ConvergenceError as exc:
        checks.append(_check("warehouse_reachable", False, exc.message))
    return StepResult(details={"checks": checks})
