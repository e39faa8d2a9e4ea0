"""`convergence templates list|show|check`: the pipeline templates and setup pipelines shipped under configs/.

`check` loads every one as a trigger would (its shape, then each step against its processor's config model)
and reports each OK or with its problems, naming the step and the field; it exits 1 if any is bad, so CI
and a template author hear about a broken step before a tenant's run does. It reads this checkout's
configs/ and needs no running platform. convergence/cli/__init__.py registers the app with
`app.add_typer(templates_app, name="templates")`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

import common.processors.registry  # noqa: F401  (installs the step checker templates are loaded with)
from common.errors import ConvergenceError
from common.providers.registry import find_provider
from common.templates.loader import parse_template_file, shipped_pipelines
from common.templates.models import PipelineTemplate
from common.templates.step_checks import InvalidTemplate, StepProblem
from convergence.cli.output import error_line

templates_app = typer.Typer(
    help="Pipeline templates under configs/: list them, show one, check them all.",
    no_args_is_help=True,
    add_completion=False,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@dataclass
class Checked:
    """One shipped file after loading: the parsed template, or its problems."""

    name: str
    path: Path
    template: PipelineTemplate | None = None
    problems: list[StepProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        problems = [{"step_id": p.step_id, "field": p.field, "message": p.message} for p in self.problems]
        return {"template": self.name, "ok": self.ok, "problems": problems}


def _check(name: str, path: Path) -> Checked:
    """Load one file as a trigger would; a template of a folder the provider registry lacks is a problem."""
    checked = Checked(name, path)
    folder = name.split("/", 1)[0]
    if folder != "setup" and find_provider(folder) is None:
        checked.problems.append(
            StepProblem("", "", f"configs/{folder} is not a provider of common/providers/registry.py")
        )
    try:
        checked.template = parse_template_file(path, name)
    except InvalidTemplate as exc:
        checked.problems.extend(exc.problems)
    except ConvergenceError as exc:
        checked.problems.append(StepProblem("", "", exc.message))
    return checked


def _shipped(names: list[str] | None = None) -> list[Checked]:
    """Every shipped template and setup pipeline (or those named), checked; an unknown name exits 2."""
    files = dict(shipped_pipelines())
    unknown = sorted(set(names or ()) - set(files))
    if unknown:
        error_line(f"no shipped template {', '.join(unknown)} (see `convergence templates list`)")
        raise typer.Exit(2)
    return [_check(name, path) for name, path in files.items() if not names or name in names]


@templates_app.command("list")
def list_command(as_json: JsonOption = False) -> None:
    """Every shipped template and setup pipeline with its description."""
    checked = _shipped()
    if as_json:
        rows = [
            {"template": c.name, "description": c.template.description if c.template else None, "ok": c.ok}
            for c in checked
        ]
        print(json.dumps({"templates": rows}, indent=2))
        return
    console = Console(highlight=False)
    for c in checked:
        about = escape(c.template.description) if c.template else "[red]invalid: see `templates check`[/red]"
        console.print(f"[bold]{c.name}[/bold]  {about}", soft_wrap=True)


@templates_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="provider/domain/template, or setup/<pipeline>.")],
    as_json: JsonOption = False,
) -> None:
    """One template as written: description, variables and steps (or why it does not load)."""
    (checked,) = _shipped([name])
    if checked.template is None:
        _report([checked], as_json)
        raise typer.Exit(1)
    template = checked.template
    if as_json:
        print(json.dumps({"template": name, **template.model_dump(mode="json")}, indent=2, default=str))
        return
    console = Console(highlight=False)
    console.print(f"[bold]{name}[/bold]: {escape(template.description)}", soft_wrap=True)
    for variable, spec in template.variables.items():
        settable = "overridable" if spec.overridable else "fixed"
        default = escape(repr(spec.default))
        console.print(f"  variable {variable} ({spec.type}, {settable}): default {default}", soft_wrap=True)
    for step in template.steps:
        console.print(
            f"  step {step.step_id} {escape(f'[{step.ps_type}]')} trigger {step.trigger}, on_failure {step.on_failure}:"
            f" {escape(step.name or step.step_id)}",
            soft_wrap=True,
        )


@templates_app.command("check")
def check(
    names: Annotated[
        list[str] | None, typer.Argument(help="Templates to check (default: every shipped one).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Load every shipped template and setup pipeline as a trigger would; exit 1 if any is bad."""
    checked = _shipped(names)
    _report(checked, as_json)
    raise typer.Exit(0 if all(c.ok for c in checked) else 1)


def _report(checked: list[Checked], as_json: bool) -> None:
    if as_json:
        bad = sum(not c.ok for c in checked)
        print(json.dumps({"templates": [c.as_json() for c in checked], "invalid": bad}, indent=2))
        return
    console = Console(highlight=False)
    for c in checked:
        console.print(f"[green]OK[/green]   {c.name}" if c.ok else f"[red]FAIL[/red] {c.name}", soft_wrap=True)
        for problem in c.problems:
            console.print(f"       {escape(str(problem))}", soft_wrap=True)
    bad = sum(not c.ok for c in checked)
    summary = f"{len(checked) - bad} of {len(checked)} templates load" + (f"; {bad} invalid" if bad else "")
    console.print(summary)
