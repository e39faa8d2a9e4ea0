"""Resolve a template for one tenant and one request: typed variables, placeholders, safety rules.

Rules (CONTRACT §3): a request may set only `date`, `trigger_by` and declared overridable variables;
built-ins cannot be overridden; unknown placeholders, bad types and cycles are refused (400) before any
run exists. In SQL, `{name}` may only stand for identifiers built from validated names; every value
reaches SQL as a query parameter (@name).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from common.errors import BadRequest
from common.templates.models import (
    BUILTINS,
    IDENTIFIER_BUILTINS,
    REQUEST_SETTABLE_BUILTINS,
    CHECK_SQL_KEYS,
    SQL_KEYS,
    PipelineTemplate,
    ResolvedPipeline,
    ResolvedStep,
    VariableSpec,
)

PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_STRING_LENGTH = 1000
TRIGGER_BY_RE = re.compile(r"^[\w.@+\- :/]{1,200}$")
EARLIEST_DATE = dt.date(2000, 1, 1)
# Schedules say `date: yesterday`; the run records the UTC day it resolved to.
RELATIVE_DATES = {"today": 0, "yesterday": 1}


class TemplateError(BadRequest):
    """The template or the request cannot be resolved into a safe pipeline."""

    code = "invalid_template"


class InvalidParameter(BadRequest):
    code = "invalid_parameter"


def placeholders(text: str) -> set[str]:
    """Names of the {placeholders} in a string ({{ and }} are literal braces)."""
    return {m.group(1) for m in PLACEHOLDER_RE.finditer(text) if m.group(1)}


def _substitute(text: str, values: Mapping[str, Any], where: str) -> str:
    def repl(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if name not in values:
            raise TemplateError(f"unknown placeholder {{{name}}} in {where}")
        return str(values[name])

    return PLACEHOLDER_RE.sub(repl, text)


def coerce_value(name: str, spec: VariableSpec | None, kind: str, value: Any, today: dt.date | None = None) -> Any:
    """Check and convert one variable value to its declared type, or refuse it naming the variable."""
    if kind == "date":
        if isinstance(value, str) and value in RELATIVE_DATES:
            value = ((today or dt.datetime.now(dt.UTC).date()) - dt.timedelta(days=RELATIVE_DATES[value])).isoformat()
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            parsed = value
        elif isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            try:
                parsed = dt.date.fromisoformat(value)
            except ValueError:
                raise InvalidParameter(f"{name} is not a real date: {value!r}") from None
        else:
            raise InvalidParameter(f"{name} must be a date as YYYY-MM-DD")
        latest = (today or dt.datetime.now(dt.UTC).date()) + dt.timedelta(days=366)
        if not EARLIEST_DATE <= parsed <= latest:
            raise InvalidParameter(f"{name} must be between {EARLIEST_DATE} and {latest}")
        return parsed.isoformat()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InvalidParameter(f"{name} must be an integer")
        if isinstance(value, str) and not re.fullmatch(r"-?\d{1,18}", value):
            raise InvalidParameter(f"{name} must be an integer")
        return int(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise InvalidParameter(f"{name} must be true or false")
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string")
    if len(value) > MAX_STRING_LENGTH:
        raise InvalidParameter(f"{name} is longer than {MAX_STRING_LENGTH} characters")
    if kind == "enum" and spec is not None and value not in (spec.values or []):
        raise InvalidParameter(f"{name} must be one of: {', '.join(spec.values or [])}")
    if spec is not None and spec.pattern and not re.fullmatch(spec.pattern, value):
        raise InvalidParameter(f"{name} does not match {spec.pattern}")
    return value


def _resolve_defaults(template: PipelineTemplate, fixed: dict[str, Any]) -> dict[str, Any]:
    """Declared variables whose defaults may reference other variables; cycles are refused."""
    resolved = dict(fixed)
    visiting: list[str] = []

    def resolve(name: str) -> Any:
        if name in resolved:
            return resolved[name]
        if name not in template.variables:
            raise TemplateError(f"unknown placeholder {{{name}}} in variable {visiting[-1]}")
        if name in visiting:
            raise TemplateError(f"variables reference each other in a cycle: {' -> '.join([*visiting, name])}")
        spec = template.variables[name]
        visiting.append(name)
        value = spec.default
        if isinstance(value, str):
            value = _substitute_with(value, resolve, f"variable {name}")
        visiting.pop()
        if value is None:
            raise TemplateError(f"variable {name} has no default and was not given")
        resolved[name] = coerce_value(name, spec, spec.type, value)
        return resolved[name]

    for name in template.variables:
        resolve(name)
    return resolved


def _substitute_with(text: str, lookup: Any, where: str) -> str:
    def repl(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        return str(lookup(name))

    return PLACEHOLDER_RE.sub(repl, text)


def _resolve_config(value: Any, values: Mapping[str, Any], where: str, in_sql: bool = False) -> Any:
    if isinstance(value, str):
        if in_sql:
            bad = sorted(placeholders(value) - IDENTIFIER_BUILTINS)
            if bad:
                raise TemplateError(
                    f"{where}: SQL may use {{...}} only for identifiers ({', '.join(sorted(IDENTIFIER_BUILTINS))});"
                    f" pass {', '.join(bad)} as @{bad[0]} query parameters"
                )
        return _substitute(value, values, where)
    if isinstance(value, list):
        return [_resolve_config(v, values, f"{where}[{i}]", in_sql) for i, v in enumerate(value)]
    if isinstance(value, dict):
        in_check = ".checks[" in where
        return {
            k: _resolve_config(v, values, f"{where}.{k}", in_sql or k in SQL_KEYS or (in_check and k in CHECK_SQL_KEYS))
            for k, v in value.items()
        }
    return value


def resolve_template(
    template: PipelineTemplate,
    *,
    tenant_id: str,
    provider: str,
    domain: str,
    template_name: str,
    run_id: str,
    request: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
) -> ResolvedPipeline:
    """Bind a template to a tenant and a request. Raises 400 errors naming what is wrong."""
    request = dict(request or {})
    for name in request:
        if name in BUILTINS and name not in REQUEST_SETTABLE_BUILTINS:
            raise InvalidParameter(f"{name} is a built-in variable and cannot be set by a request")
        if name in REQUEST_SETTABLE_BUILTINS:
            continue
        if name not in template.variables:
            raise InvalidParameter(f"{name} is not a variable of this template")
        if not template.variables[name].overridable:
            raise InvalidParameter(f"{name} cannot be overridden by a request")

    run_date = today or dt.datetime.now(dt.UTC).date()
    default_date = (run_date - dt.timedelta(days=1)).isoformat()
    date = coerce_value("date", None, "date", request.get("date", default_date), today=run_date)
    trigger_by = request.get("trigger_by", "api")
    if not isinstance(trigger_by, str) or not TRIGGER_BY_RE.fullmatch(trigger_by):
        raise InvalidParameter("trigger_by must be 1-200 letters, digits or . @ + - : / _ and spaces")

    builtins: dict[str, Any] = {
        "tenant_id": tenant_id,
        "org_slug": tenant_id,
        "provider": provider,
        "domain": domain,
        "template_name": template_name,
        "date": date,
        "trigger_by": trigger_by,
        "run_date": run_date.isoformat(),
        "run_id": run_id,
    }
    pipeline_id = _substitute(template.pipeline_id, builtins, "pipeline_id")
    if pipeline_id != f"{tenant_id}-{provider}-{domain}-{template_name}":
        raise TemplateError("pipeline_id must resolve to {tenant}-{provider}-{domain}-{template}")
    builtins["pipeline_id"] = pipeline_id

    overrides = {
        name: coerce_value(name, template.variables[name], template.variables[name].type, value)
        for name, value in request.items()
        if name in template.variables
    }
    values = _resolve_defaults(template, {**builtins, **overrides})

    steps = [
        ResolvedStep(
            step_id=step.step_id,
            name=step.name or step.step_id,
            ps_type=step.ps_type,
            trigger=step.trigger,
            on_failure=step.on_failure,
            timeout_seconds=step.timeout_seconds,
            config=_resolve_config(step.config, values, f"step {step.step_id}"),
        )
        for step in template.steps
    ]
    types = {name: spec.type for name, spec in template.variables.items()} | {"date": "date", "run_date": "date"}
    parameters = {"date": date, "trigger_by": trigger_by} | {n: values[n] for n in template.variables}
    return ResolvedPipeline(
        pipeline_id=pipeline_id,
        tenant_id=tenant_id,
        provider=provider,
        domain=domain,
        template=template_name,
        description=template.description,
        variables=values,
        variable_types=types,
        parameters=parameters,
        steps=steps,
    )
