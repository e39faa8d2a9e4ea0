"""`python -m bench fanout [--tenants N] [--chunk-size N] [--bus local|pubsub|both]`, `python -m bench quota`."""

from __future__ import annotations

import typer

from bench import fanout, quota

app = typer.Typer(add_completion=False, help="Convergence benchmarks: figures and ratios, no pass/fail.")
app.command("fanout", help="One scheduled run to N onboarded tenants vs one publish at a time.")(fanout.main)
app.command("quota", help="A day's pipelines on bqemulator, counted and scaled to the platform's quotas.")(quota.main)


@app.callback()
def _root() -> None:
    """Benchmarks."""


if __name__ == "__main__":
    app()
