"""Processor registry: ps_type name → callable(StepContext) → StepResult."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigurationError
from common.templates.models import ResolvedPipeline, ResolvedStep


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


Processor = Callable[[StepContext], StepResult]
_REGISTRY: dict[str, Processor] = {}
_loaded = False


def processor(*names: str) -> Callable[[Processor], Processor]:
    """Register a function under one or more ps_type names."""

    def register(fn: Processor) -> Processor:
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not fn:
                raise ConfigurationError(f"ps_type {name} registered twice")
            _REGISTRY[name] = fn
        return fn

    return register


def _load_families() -> None:
    """Import every module of this package once: each registers its ps_types on import."""
    global _loaded
    if not _loaded:
        package = importlib.import_module("common.processors")
        for module in pkgutil.iter_modules(package.__path__):
            if module.name != "registry":
                importlib.import_module(f"common.processors.{module.name}")
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
