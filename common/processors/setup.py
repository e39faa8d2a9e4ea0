"""setup.*: the steps of the platform's own pipelines (bootstrap, onboarding, dryrun).

The dataset a setup step works on is the pipeline's tenant: the control dataset for bootstrap, the
organisation's dataset for onboarding.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.crypto.api_keys import generate_api_key
from common.errors import ConvergenceError
from common.metadata import api_keys, control_dataset, organizations, subscriptions
from common.metadata.schemas import load_schema, schema_names
from common.metadata.subscriptions import plans
from common.processors.registry import NoConfig, StepContext, StepResult, processor
from common.types import EMAIL_PATTERN, VariableName, utcnow

EMAIL_RE = re.compile(EMAIL_PATTERN)
RESERVED_SLUGS = frozenset({"information_schema", "pg_catalog", "main", "temp", "system", "organizations"})


LABEL = r"^[a-z][a-z0-9_-]{0,62}$"  # BigQuery's label keys; values may also start with a digit
LABEL_VALUE = r"^[a-z0-9_-]{0,63}$"


class DatasetConfig(BaseModel):
    """A setup.create_dataset step: the bool variable, if any, that asks for the dataset to be recreated."""

    model_config = ConfigDict(extra="forbid")

    recreate_variable: VariableName | None = None


class CreateDatasetConfig(DatasetConfig):
    """A setup.create_dataset step: also the labels the dataset carries (e.g. `tenant: "{tenant_id}"`)."""

    labels: dict[Annotated[str, Field(pattern=LABEL)], Annotated[str, Field(pattern=LABEL_VALUE)]] = Field(
        default_factory=dict, max_length=64
    )


class TablesConfig(DatasetConfig):
    """A setup.create_tables step: which scope's tables (all of them unless `tables` names some)."""

    scope: Literal["control", "tenant"]
    tables: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tables_have_schemas(self) -> TablesConfig:
        unknown = [t for t in self.tables if t not in schema_names(self.scope)]
        if unknown:
            raise ValueError(f"no {self.scope} schema for {', '.join(unknown)} in configs/schemas/{self.scope}")
        return self


def _flag(ctx: StepContext, variable: str | None) -> bool:
    return bool(ctx.pipeline.variables.get(variable)) if variable else False


@processor("setup.create_dataset", config=CreateDatasetConfig)
def create_dataset(ctx: StepContext, config: CreateDatasetConfig) -> StepResult:
    recreate = _flag(ctx, config.recreate_variable)
    created = ctx.warehouse.create_dataset(ctx.tenant_id, recreate=recreate, labels=config.labels)
    return StepResult(details={"dataset": ctx.tenant_id, "created": created, "labels": config.labels})


@processor("setup.create_tables", config=TablesConfig)
def create_tables(ctx: StepContext, config: TablesConfig) -> StepResult:
    scope = config.scope
    tables = config.tables or schema_names(scope)
    recreate = _flag(ctx, config.recreate_variable)
    created = [t for t in tables if ctx.warehouse.create_table(ctx.tenant_id, load_schema(scope, t), recreate=recreate)]
    return StepResult(rows_processed=len(created), details={"tables_created": created})


@processor("setup.issue_api_key", config=NoConfig)
def issue_key(ctx: StepContext, config: NoConfig) -> StepResult:
    key = generate_api_key(ctx.tenant_id)
    api_keys.replace_active_key(ctx.runtime, ctx.tenant_id, key)
    return StepResult(rows_processed=1, details={"api_key": key})


@processor("setup.register_organization", config=NoConfig)
def register_organization(ctx: StepContext, config: NoConfig) -> StepResult:
    rt, org, values = ctx.runtime, ctx.tenant_id, ctx.pipeline.variables
    plan = values["subscription_plan"]
    limits = plans()[plan]
    now = utcnow()
    rt.warehouse.run_atomically(
        [
            *subscriptions.replace_statements(rt, org, plan, limits, now=now),
            organizations.insert_profile_statement(
                rt, org, company_name=values["company_name"], admin_email=values["admin_email"], plan=plan, now=now
            ),
        ]
    )
    return StepResult(rows_processed=2, details={"org_slug": org, "plan": plan})


def _check(name: str, ok: bool, message: str, status_if_bad: str = "failed") -> dict[str, Any]:
    return {"name": name, "status": "passed" if ok else status_if_bad, "message": message}


@processor("setup.dryrun_checks", config=NoConfig)
def dryrun_checks(ctx: StepContext, config: NoConfig) -> StepResult:
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
        bootstrapped = control_dataset.is_bootstrapped(rt)
        checks.append(_check("platform_bootstrapped", bootstrapped, "control dataset and tables exist"
                             if bootstrapped else "run POST /api/v1/admin/bootstrap first"))  # fmt: skip
        if bootstrapped:
            exists = organizations.get_profile(rt, org) is not None
            checks.append(_check("org_available", not exists, f"{org} is {'already onboarded' if exists else 'free'}"))
        dataset_exists = rt.warehouse.dataset_exists(org)
        checks.append(_check("dataset", not dataset_exists, f"dataset {org} "
                             + ("exists and would be reused" if dataset_exists else "will be created"), "warning"))
    except ConvergenceError as exc:
        checks.append(_check("warehouse_reachable", False, exc.message))
    return StepResult(details={"checks": checks})
