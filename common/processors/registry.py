"""Processor registry: ps_type name → the step function and the config model its steps are checked against.

A processor registers with `@processor("family.name", "alias", ..., config=Model)` and is written as
`fn(ctx, config)`: it receives the step's resolved config already validated as `Model`. The same model
checks every template's steps when the template loads (installed into common.templates.step_checks below),
so a step that cannot run is refused before a run exists, and again, with its values known, when it runs.

Processors are the modules of this package plus the `processors` module of each provider package under
common/providers/. Provider packages sit above this layer (they import this registry), so they are found by
walking that package on first use, never imported here by name.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import ConfigurationError
from common.templates.models import ResolvedPipeline, ResolvedStep
from common.templates.step_checks import ConfigProblem, install_step_checker, plain_message


@dataclass
class StepContext:
    """What a processor may use: the runtime's adapters, the run, the resolved step and its variables."""

    runtime: Any
    tenant_id: str
    run_id: str
    pipeline: ResolvedPipeline
    step: ResolvedStep
    attempt: int = 1
    run_failed: bool = False

    @property
    def config(self) -> dict[str, Any]:
        """The step's resolved config as written (processors receive it validated, as their model)."""
        return self.step.config

    @property
    def warehouse(self) -> Any:
        return self.runtime.warehouse

    @property
    def params(self) -> dict[str, Any]:
        """Typed query parameters: every resolved variable, usable as @name in SQL."""
        return self.pipeline.query_params()


@dataclass
class StepResult:
    rows_processed: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class NoConfig(BaseModel):
    """The config model of a step that takes none: any key given is a mistake."""

    model_config = ConfigDict(extra="forbid")


Processor = Callable[[StepContext], StepResult]  # what execution calls
StepFunction = Callable[[StepContext, Any], StepResult]  # what a processor module writes: fn(ctx, config)


@dataclass(frozen=True)
class ProcessorSpec:
    """One registered processor: its ps_type, the older names it answers to, its config model."""

    name: str
    aliases: tuple[str, ...]
    config: type[BaseModel]
    function: StepFunction


_REGISTRY: dict[str, Processor] = {}  # every name and alias → the callable execution runs
_SPECS: dict[str, ProcessorSpec] = {}
_loaded = False


def config_problems(model: type[BaseModel], config: Mapping[str, Any]) -> list[ConfigProblem]:
    """What is wrong with `config` as `model`, field by field ([] when it validates)."""
    try:
        model.model_validate(dict(config))
    except ValidationError as exc:
        return [
            ConfigProblem(tuple(e["loc"]), plain_message(e["msg"]))
            for e in exc.errors(include_input=False, include_url=False)
        ]
    return []


def step_config(ctx: StepContext, model: type[BaseModel]) -> Any:
    """The step's resolved config as `model`, or a terminal error naming the step and each bad field."""
    try:
        return model.model_validate(ctx.config)
    except ValidationError:
        found = config_problems(model, ctx.config)
        problems = "; ".join(f"{p.field or 'config'}: {p.message}" for p in found)
        raise ConfigurationError(f"step {ctx.step.step_id}: {problems}") from None


def processor(name: str, *aliases: str, config: type[BaseModel]) -> Callable[[StepFunction], StepFunction]:
    """Register `fn(ctx, config)` as ps_type `name` (and `aliases`), its steps checked against `config`."""

    def register(fn: StepFunction) -> StepFunction:
        spec = ProcessorSpec(name, aliases, config, fn)

        @functools.wraps(fn)
        def run(ctx: StepContext) -> StepResult:
            return fn(ctx, step_config(ctx, config))

        for ps_type in (name, *aliases):
            if ps_type in _SPECS and _SPECS[ps_type].function is not fn:
                raise ConfigurationError(f"ps_type {ps_type} registered twice")
            _SPECS[ps_type], _REGISTRY[ps_type] = spec, run
        return fn

    return register


def _processor_modules() -> list[str]:
    """This package's step families (each module registers its ps_types on import).

    Providers' steps are registered by their own packages, which `common.providers.registry` imports; the
    services import that registry, so whatever loads a template or runs a step sees them.
    """
    own = importlib.import_module("common.processors")
    names = [f"common.processors.{m.name}" for m in pkgutil.iter_modules(own.__path__)]
    names.remove("common.processors.registry")
    return names


def _load_families() -> None:
    """Import every processor module once: each registers its ps_types on import."""
    global _loaded
    if not _loaded:
        for name in _processor_modules():
            importlib.import_module(name)
        _loaded = True


def is_registered(ps_type: str) -> bool:
    _load_families()
    return ps_type in _REGISTRY


def get_processor(ps_type: str) -> Processor:
    _load_families()
    try:
        return _REGISTRY[ps_type]
    except KeyError:
        raise ConfigurationError(f"no processor for ps_type {ps_type}") from None


def processor_specs() -> list[ProcessorSpec]:
    """Every registered processor once (aliases folded in), sorted by ps_type."""
    _load_families()
    return sorted({spec.name: spec for spec in _SPECS.values()}.values(), key=lambda spec: spec.name)


def check_step(ps_type: str, config: Mapping[str, Any]) -> list[ConfigProblem]:
    """A template step as written, checked against its processor's config model (the load-time check)."""
    _load_families()
    spec = _SPECS.get(ps_type)
    if spec is None:
        close = difflib.get_close_matches(ps_type, _SPECS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return [ConfigProblem(("ps_type",), f"no processor is registered as {ps_type}{hint}")]
    return config_problems(spec.config, config)


install_step_checker(check_step)
