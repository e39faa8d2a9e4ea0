"""What the demo prints: the runs, each tenant's costs, and whether they match what the sources billed.

Costs come from the cost summary route and are shown per currency as billed: amounts in different
currencies are never added together. The reconciliation compares, per provider and currency, FOCUS
BilledCost with the total the demo computed from the source data itself (source_data.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from convergence.demo.api import Run
from convergence.demo.tenants import TenantPlan
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

REL_TOLERANCE = 1e-6
OUTPUT_STEP = "gcp.bq_etl"  # the step that writes a pipeline's output table; its rows are the run's rows


@dataclass(frozen=True)
class ProviderCheck:
    """One provider's total in one currency: in focus_costs (None when absent) and at the source."""

    provider: str
    currency: str
    focus: float | None
    source: float | None

    @property
    def matches(self) -> bool:
        if self.focus is None or self.source is None:
            return False
        return math.isclose(self.focus, self.source, rel_tol=REL_TOLERANCE, abs_tol=1e-9)


def _coloured(status: str) -> str:
    colour = "green" if status == "COMPLETE" else "red"
    return f"[{colour}]{status}[/{colour}]"


def runs_table(runs: list[Run]) -> Table:
    table = Table(title="Pipeline runs (through the API and the bus)")
    for column in ("tenant", "pipeline", "date", "status", "ms", "rows", "error"):
        table.add_column(column, justify="right" if column in ("ms", "rows") else "left")
    for run in runs:
        view = run.view
        rows = sum(s["rows_processed"] or 0 for s in view.get("steps", []) if s["ps_type"] == OUTPUT_STEP)
        table.add_row(
            run.org,
            view.get("pipeline_id", run.path),
            run.date,
            _coloured(run.status),
            str(view.get("duration_ms") or ""),
            str(rows),
            view.get("error_message") or "",
        )
    return table


def _per_provider(summary: dict[str, Any]) -> dict[tuple[str, str], float]:
    """(ProviderName, currency) → cost from a group_by=provider summary, per currency as billed."""
    return {
        (group["key"], entry["currency"]): group["cost"]
        for entry in summary["by_currency"]
        for group in entry["groups"]
    }


def reconcile(plan: TenantPlan, by_provider: dict[str, Any]) -> list[ProviderCheck]:
    """Every provider and currency either side knows of, with both totals."""
    focus = _per_provider(by_provider)
    source = {
        (provider, currency): total
        for provider, totals in plan.expected.items()
        for currency, total in totals.items()
    }
    return [
        ProviderCheck(provider, currency, focus.get((provider, currency)), source.get((provider, currency)))
        for provider, currency in sorted(focus.keys() | source.keys(), key=lambda k: (k[1], k[0]))
    ]


def _amount(value: float | None, places: int = 2) -> str:
    """Money with `places` decimals; a non-zero amount that would show as 0.00 gets 6 instead."""
    if value is None:
        return "—"
    if places < 6 and value != 0 and abs(value) < 10**-places:
        places = 6
    return f"{value:,.{places}f}"


def provider_table(plan: TenantPlan, checks: list[ProviderCheck]) -> Table:
    table = Table(title=f"{plan.org}: cost by provider, {plan.start} to {plan.end} (FOCUS BilledCost)")
    for column in ("provider", "currency", "FOCUS cost", "source's own total", "match"):
        table.add_column(column, justify="left" if column in ("provider", "currency") else "right")
    for check in checks:
        mark = "[green]yes[/green]" if check.matches else "[red]NO[/red]"
        table.add_row(check.provider, check.currency, _amount(check.focus, 6), _amount(check.source, 6), mark)
    return table


def service_table(plan: TenantPlan, by_service: dict[str, Any]) -> Table:
    """Cost by service, each currency's services and total on their own (never summed across currencies)."""
    table = Table(title=f"{plan.org}: cost by service, {plan.start} to {plan.end}")
    for column in ("service", "currency", "cost"):
        table.add_column(column, justify="right" if column == "cost" else "left")
    entries = by_service["by_currency"]
    for index, entry in enumerate(entries):
        for group in entry["groups"]:
            table.add_row(group["key"] or "(none)", entry["currency"], _amount(group["cost"]))
        table.add_row(
            f"[bold]total {entry['currency']}[/bold]",
            entry["currency"],
            f"[bold]{_amount(entry['total'])}[/bold]",
            end_section=index < len(entries) - 1,
        )
    return table


def currency_totals(by_provider: dict[str, Any]) -> str:
    """The total of each currency, side by side: `1.26 CAD and 1.68 USD (not added: ...)`."""
    parts = [f"{_amount(e['total'])} {e['currency']}" for e in by_provider["by_currency"]]
    if len(parts) > 1:
        return " and ".join(parts) + " (not added: different currencies)"
    return parts[0] if parts else "nothing"


def verdict(plan: TenantPlan, checks: list[ProviderCheck]) -> str:
    """The tenant's reconciliation line: `<org>: ... → reconciled`, or what does not match."""
    named = ", ".join(f"{c.provider} {_amount(c.source, 6)} {c.currency}" for c in checks)
    head = f"{plan.org}: FOCUS BilledCost per provider vs the sources' own totals ({named})"
    if not checks:
        return f"{head} → [red]nothing to reconcile[/red]"
    wrong = [c for c in checks if not c.matches]
    if not wrong:
        return f"{head} → [green]reconciled[/green]"
    details = "; ".join(
        f"{c.provider} {c.currency}: FOCUS {_amount(c.focus, 6)}, source {_amount(c.source, 6)}"
        for c in wrong
    )
    return f"{head} → [red]NOT reconciled ({details})[/red]"


def quality_warnings(wh: Warehouse, org: str, runs: list[Run]) -> list[dict[str, Any]]:
    """Warning-severity checks that failed in these runs: check name, runs, rows (from dq_results)."""
    run_ids = [run.run_id for run in runs if run.org == org and run.run_id]
    if not run_ids or not wh.table_exists(org, "dq_results"):
        return []
    return wh.query(
        f"SELECT check_name, COUNT(*) AS failures, SUM(IFNULL(failed_rows, 0)) AS failed_rows"
        f" FROM {table_ref(org, 'dq_results')}"
        " WHERE pipeline_logging_id IN UNNEST(@run_ids) AND status = 'FAIL' AND severity = 'warn'"
        " GROUP BY check_name ORDER BY check_name",
        {"run_ids": run_ids},
    )


def warnings_line(org: str, warnings: list[dict[str, Any]]) -> str | None:
    if not warnings:
        return None
    total = sum(int(w["failures"]) for w in warnings)
    listed = ", ".join(
        f"{w['check_name']} in {w['failures']} run(s), {w['failed_rows']} row(s)" for w in warnings
    )
    return f"  data-quality warnings recorded for {org}: {total} ({listed})"
