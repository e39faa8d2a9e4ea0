"""A template's steps checked against their processors' config models when the template loads.

Templates sit below processors (DESIGN.md, layers), so this module cannot import the processor registry:
the registry installs its checker here when it is imported (`install_step_checker`), and every entry point
imports it through the services. Loading a template with no checker installed is refused, so a template can
never be taken as checked when it was not.

Placeholders are resolved later, per run, so a step is checked as written: structure, types, required and
unknown fields, known ps_type, enum values. A value that still holds a placeholder (`min: "{min_rows}"`,
`to: "{notify_to}"`) cannot be judged yet; a problem found at such a value is left for the run to check
once the value is known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.errors import ConfigurationError
from common.templates.models import PipelineTemplate
from common.templates.resolver import TemplateError, placeholders

Location = tuple[str | int, ...]
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a step's config: where (a path into the config) and what."""

    loc: Location
    message: str

    @property
    def field(self) -> str:
        return field_path(self.loc)


@dataclass(frozen=True)
class StepProblem:
    """A problem of one step of a template, as reports and refusals name it."""

    step_id: str
    field: str
    message: str

    def __str__(self) -> str:
        step = f"step {self.step_id}" if self.step_id else "template"
        return f"{step}: {self.field}: {self.message}" if self.field else f"{step}: {self.message}"


# (ps_type, the step's config as written) -> its problems; an unknown ps_type is a problem at ("ps_type",).
StepChecker = Callable[[str, Mapping[str, Any]], list[ConfigProblem]]
_checker: StepChecker | None = None


class InvalidTemplate(TemplateError):
    """A template (or setup pipeline) breaks the template shape or a processor's config model (400)."""

    code = "invalid_template"

    def __init__(self, template: str, problems: Sequence[StepProblem]) -> None:
        super().__init__(
            f"{template} " + "; ".join(map(str, problems)),
            template=template,
            problems=[{"step_id": p.step_id, "field": p.field, "message": p.message} for p in problems],
        )
        self.problems = list(problems)


def install_step_checker(checker: StepChecker) -> None:
    """Called by the processor registry on import; templates loaded from now on are checked by it."""
    global _checker
    _checker = checker


def field_path(loc: Location) -> str:
    """`checks[0].min` for ("checks", 0, "min")."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def plain_message(message: str) -> str:
    """A pydantic error message without the prefix it puts before a validator's own words."""
    for prefix in _PYDANTIC_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _awaits_a_placeholder(config: Mapping[str, Any], loc: Location) -> bool:
    """Whether the value a problem points at is (or lists) a string holding a placeholder."""
    value: Any = config
    for part in loc:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            break
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str) and placeholders(v) for v in values)


def step_problems(template: PipelineTemplate) -> list[StepProblem]:
    """Every problem of every step of a parsed template, in step order."""
    if _checker is None:
        raise ConfigurationError(
            "templates cannot be checked: the processor registry (common.processors) is not imported"
        )
    problems = []
    for step in template.steps:
        config = step.config
        for problem in _checker(step.ps_type, config):
            if not _awaits_a_placeholder(config, problem.loc):
                problems.append(StepProblem(step.step_id, problem.field, problem.message))
    return problems


def check_steps(template_name: str, template: PipelineTemplate) -> PipelineTemplate:
    """The template, or InvalidTemplate naming the template and each step and field that is wrong."""
    problems = step_problems(template)
    if problems:
        raise InvalidTemplate(template_name, problems)
    return template
