"""`convergence stage`: stage each Cloud Function's source folder for Terraform to archive and deploy.

convergence/cli/__init__.py registers it with `app.command("stage")(stage_command)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convergence.cli.output import fail
from common.errors import ConvergenceError


def stage_command(
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder that receives one sub-folder per function.")
    ] = Path("build"),
    functions: Annotated[
        list[str] | None,
        typer.Option(
            "--function",
            metavar="NAME",
            help="Function to stage: onboard, trigger or step_execute (repeatable; default: all three).",
        ),
    ] = None,
) -> None:
    """Stage main.py, common/, configs/ and a pinned requirements.txt into <out>/<function>/."""
    from convergence.packaging import FUNCTIONS, stage_functions

    try:
        staged = stage_functions(out, functions or FUNCTIONS)
    except ConvergenceError as exc:
        fail(exc)
    for function in staged:
        print(function.summary())
