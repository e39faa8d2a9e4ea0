"""What every `convergence` command prints on failure: one plain line, and exit code 2."""

from __future__ import annotations

import sys

import typer

from common.errors import ConvergenceError


def error_line(message: str) -> None:
    """One plain line on stderr: never wrapped, never read as markup."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


def fail(exc: ConvergenceError) -> None:
    """Report a Convergence error in one line and exit 2."""
    error_line(exc.message)
    raise typer.Exit(2) from None
