"""The shape of a pipeline template (CONTRACT §3) and of a resolved pipeline (a run's snapshot)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from common.types import StepId

VariableType = Literal["string", "date", "int", "bool", "enum"]

IDENTIFIER_BUILTINS = frozenset({"tenant_id", "org_slug", "provider", "domain", "template_name"})
BUILTINS = IDENTIFIER_BUILTINS | {"pipeline_id", "date", "trigger_by", "run_date", "run_id"}
REQUEST_SETTABLE_BUILTINS = frozenset({"date", "trigger_by"})
SQL_KEYS = frozenset({"sql", "expression", "where", "period_where", "replace_where"})
CHECK_SQL_KEYS = frozenset({"source", "target"})  # SQL inside a dq check (reconcile), not elsewhere
STANDARD_PIPELINE_ID = "{tenant_id}-{provider}-{domain}-{template_name}"
MAX_STEP_SECONDS = 540  # what an event-driven function may run for


class VariableSpec(BaseModel):
    """A declared variable: its default, type and what a request may set it to."""

    model_config = ConfigDict(extra="forbid")

    type: VariableType = "string"
    default: Any = None
    description: str = ""
    pattern: str | None = None
    values: list[str] | None = None
    overridable: bool = False

    @model_validator(mode="after")
    def _enum_needs_values(self) -> VariableSpec:
        if self.type == "enum" and not self.values:
            raise ValueError("an enum variable needs `values`")
        return self


class StepSpec(BaseModel):
    """One step: what runs (ps_type), when (trigger) and what a failure does (on_failure)."""

    model_config = ConfigDict(extra="allow")

    step_id: StepId
    name: str = ""
    ps_type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    trigger: Literal["always", "on_success", "on_failure"] = "on_success"
    on_failure: Literal["stop", "continue"] = "stop"
    timeout_seconds: int = Field(300, gt=0, le=MAX_STEP_SECONDS)

    @property
    def config(self) -> dict[str, Any]:
        """The per-type configuration: every key that is not a common step field."""
        return dict(self.model_extra or {})


class PipelineTemplate(BaseModel):
    """A template as written in configs/{provider}/{domain}/{template}.yml."""

    model_config = ConfigDict(extra="forbid")

    pipeline_id: str = STANDARD_PIPELINE_ID
    name: str = Field("", description="a display name (the described shape's pipeline_name)")
    description: str = ""
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What loading accepted but does not do as written (a described template's ignored fields)."""
        return list(self._warnings)

    def with_warnings(self, warnings: list[str]) -> PipelineTemplate:
        """This template, carrying `warnings` for the template listing."""
        self._warnings = list(warnings)
        return self

    @field_validator("variables", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, dict) else {"default": v} for k, v in value.items()}
        return value

    @field_validator("variables")
    @classmethod
    def _no_builtin_redeclared(cls, value: dict[str, VariableSpec]) -> dict[str, VariableSpec]:
        clash = sorted(set(value) & BUILTINS)
        if clash:
            raise ValueError(f"built-in variables cannot be declared: {', '.join(clash)}")
        return value

    @model_validator(mode="after")
    def _unique_step_ids(self) -> PipelineTemplate:
        ids = [s.step_id for s in self.steps]
        if len(ids) != len(set(ids)):
            raise ValueError("step_id values must be unique")
        return self


class ResolvedStep(BaseModel):
    """A step with every placeholder replaced."""

    step_id: str
    name: str
    ps_type: str
    trigger: str
    on_failure: str
    timeout_seconds: int
    config: dict[str, Any]


class ResolvedPipeline(BaseModel):
    """What a run executes: stored whole in the run record so later template edits cannot change a run."""

    pipeline_id: str
    tenant_id: str
    provider: str
    domain: str
    template: str
    description: str
    variables: dict[str, Any]
    variable_types: dict[str, str]
    parameters: dict[str, Any]
    steps: list[ResolvedStep]

    def query_params(self) -> dict[str, Any]:
        """Variables typed for use as SQL query parameters (@date is a DATE, @n an INT64...)."""
        typed: dict[str, Any] = {}
        for name, value in self.variables.items():
            kind = self.variable_types.get(name, "string")
            if kind == "date" and isinstance(value, str):
                value = dt.date.fromisoformat(value)
            typed[name] = value
        return typed
