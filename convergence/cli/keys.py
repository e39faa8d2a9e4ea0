"""`convergence keys ...`: operator commands on tenant data keys.

convergence/cli/__init__.py registers them with `app.add_typer(keys_app, name="keys")`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from convergence.cli.output import fail
from common.errors import ConvergenceError

keys_app = typer.Typer(
    help="Tenant data keys: rotation under Cloud KMS.", no_args_is_help=True, add_completion=False
)
console = Console()
COUNTS = (
    "tenants", "keysets_rotated", "keysets_rewrapped", "keysets_current", "tenants_without_keyset",
    "credentials_reencrypted", "api_keys_reencrypted", "already_current", "changed_meanwhile",
)  # fmt: skip


@keys_app.command()
def rewrap(
    rotation_id: Annotated[
        str | None,
        typer.Option(
            help="Rotation to run or resume; default: the KMS key's primary version (idempotent per version)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as one JSON object.")] = False,
) -> None:
    """Give every tenant a new primary data key; re-encrypt stored credentials and API-key copies under it."""
    from common.wiring import get_runtime, reset_runtime
    from common.services.key_rotation import rewrap_all

    try:
        report = rewrap_all(get_runtime(), rotation_id=rotation_id)
    except ConvergenceError as exc:
        fail(exc)
    finally:
        reset_runtime()
    if as_json:
        print(json.dumps(report, sort_keys=True))
    else:
        console.print(
            f"rotation {report['rotation_id']} (KMS primary version: {report['kek_primary_version']})",
            soft_wrap=True,
        )
        for label in COUNTS:
            console.print(f"{label.replace('_', ' ')}: {report[label]}")
        for failure in report["failed"]:
            console.print(
                f"[red]not re-encrypted[/red]: {json.dumps(failure, sort_keys=True)}", soft_wrap=True
            )
    raise typer.Exit(1 if report["failed"] else 0)
