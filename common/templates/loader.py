"""Find, parse and check templates under configs/. Names come from URLs: validated, never joined raw.

A template is checked whole when it loads: its shape (`PipelineTemplate`), then each step's config against
its processor's model (`common.templates.step_checks`). A bad template is refused with 400 naming the
template, the step and the field, before any run exists. A template in the described system's shape is first
translated into the typed one (`common.templates.described`); its problems name its fields as it writes them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from common.errors import ConfigurationError, NotFound
from common.settings import CONFIGS_DIR
from common.templates.described import Translation, looks_described, translate
from common.templates.models import PipelineTemplate
from common.templates.step_checks import (
    InvalidTemplate,
    StepProblem,
    check_steps,
    field_path,
    plain_message,
)
from common.tenancy import validate_template_segment

# configs/ folders that are not providers: tenants can never run what is in them.
NON_PROVIDER_DIRS = frozenset({"setup", "schemas", "reference"})
SETUP_DIR = "setup"


def _written_step_id(raw: Any, index: int) -> str:
    """The step_id the template's raw YAML gives its step `index`, or "" when it has none."""
    steps = raw.get("steps") if isinstance(raw, dict) else None
    step = steps[index] if isinstance(steps, list) and index < len(steps) else None
    step_id = step.get("step_id") if isinstance(step, dict) else None
    return step_id if isinstance(step_id, str) else ""


def _shape_problems(raw: Any, exc: ValidationError) -> list[StepProblem]:
    """The template-shape errors, each naming its step (by step_id, when it has one) and field."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        in_step = len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int)
        step_id = _written_step_id(raw, loc[1]) if in_step else ""
        field = field_path(loc[2:] if step_id else loc)
        problems.append(StepProblem(step_id, field, plain_message(error["msg"])))
    return problems


def parse_template_file(path: Path, name: str) -> PipelineTemplate:
    """The template at `path`, checked; InvalidTemplate (400) naming `name`, the step and the field if bad."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise InvalidTemplate(name, [StepProblem("", "", f"is not YAML: {first}")]) from None
    translation: Translation | None = translate(name, raw) if looks_described(raw) else None
    typed = translation.template if translation else raw
    try:
        template = PipelineTemplate.model_validate(typed)
        return check_steps(name, template).with_warnings(translation.warnings if translation else [])
    except ValidationError as exc:
        problems = _shape_problems(typed, exc)
    except InvalidTemplate as exc:
        problems = exc.problems
    raise InvalidTemplate(name, translation.as_written(problems) if translation else problems)


@lru_cache(maxsize=256)
def load_template(provider: str, domain: str, template: str) -> PipelineTemplate:
    """The tenant-runnable template configs/{provider}/{domain}/{template}.yml, checked; or NotFound."""
    validate_template_segment(provider, "provider")
    validate_template_segment(domain, "domain")
    validate_template_segment(template, "template")
    path = CONFIGS_DIR / provider / domain / f"{template}.yml"
    if provider in NON_PROVIDER_DIRS or not path.is_file():
        raise NotFound(f"no template {provider}/{domain}/{template}", code="template_not_found")
    return parse_template_file(path, f"{provider}/{domain}/{template}")


@lru_cache(maxsize=16)
def load_setup_pipeline(name: str) -> PipelineTemplate:
    """A platform setup pipeline from configs/setup/ (bootstrap, onboarding, dryrun), checked."""
    validate_template_segment(name, "template")
    path = CONFIGS_DIR / SETUP_DIR / f"{name}.yml"
    if not path.is_file():
        raise ConfigurationError(f"setup pipeline {name} is missing from configs/setup")
    return parse_template_file(path, f"{SETUP_DIR}/{name}")


def template_paths() -> list[tuple[str, str, str, Path]]:
    """Every tenant-runnable template file as (provider, domain, template, path), sorted; nothing parsed."""
    found = []
    for path in sorted(CONFIGS_DIR.glob("*/*/*.yml")):
        provider, domain = path.parent.parent.name, path.parent.name
        if provider not in NON_PROVIDER_DIRS:
            found.append((provider, domain, path.stem, path))
    return found


def setup_pipeline_names() -> list[str]:
    """Every setup pipeline of configs/setup/, sorted."""
    return sorted(path.stem for path in (CONFIGS_DIR / SETUP_DIR).glob("*.yml"))


def shipped_pipelines() -> list[tuple[str, Path]]:
    """Every template and setup pipeline file as (name, path): `gcp/cost/cost_billing`, `setup/onboarding`."""
    templates = [(f"{p}/{d}/{t}", path) for p, d, t, path in template_paths()]
    setup = [
        (f"{SETUP_DIR}/{name}", CONFIGS_DIR / SETUP_DIR / f"{name}.yml") for name in setup_pipeline_names()
    ]
    return templates + setup


def list_templates() -> list[tuple[str, str, str, PipelineTemplate]]:
    """Every tenant-runnable template as (provider, domain, template, parsed), sorted."""
    return [
        (provider, domain, name, load_template(provider, domain, name))
        for provider, domain, name, _ in template_paths()
    ]
