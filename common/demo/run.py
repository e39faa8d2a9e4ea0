"""`convergence demo`: the platform end to end on one machine, through the HTTP API and the bus.

Bootstraps, onboards acme_demo and globex_demo (or rotates their keys when they already exist), loads a
seeded GCP standard usage cost export per tenant, runs gcp/cost/cost_billing for each day through the
bus, prints the runs and each tenant's costs, and reconciles them with the export's own totals.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from common.api.app import create_wsgi_app
from common.demo.gcp_billing import daily_totals, generate_billing_export
from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.warehouse.sql import table_ref

TENANTS = {
    "acme_demo": ("Acme Corporation", "finops@acme.example.com"),
    "globex_demo": ("Globex Industries", "cloud@globex.example.com"),
}
FINAL = {"COMPLETE", "FAILED"}


class DemoError(RuntimeError):
    pass


def _expect(response: Any, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise DemoError(f"{response.request.method} {response.request.path} → {response.status_code}: {response.json}")
    return response.json


def _api_key(client: Any, root: dict[str, str], org: str) -> str:
    company, email = TENANTS[org]
    body = {"org_slug": org, "company_name": company, "admin_email": email, "subscription_plan": "professional"}
    response = client.post("/api/v1/organizations/onboard", headers=root, json=body)
    if response.status_code == 409:
        return _expect(client.post(f"/api/v1/organizations/{org}/api-keys/rotate", headers=root), 200)["api_key"]
    return _expect(response, 201)["api_key"]


def _load_export(rt: Runtime, org: str, start: dt.date, days: int) -> list[dict[str, Any]]:
    """The tenant's billing export for the window, replacing what an earlier demo loaded for those days."""
    rows = generate_billing_export(org, start, days, seed=2026)
    wh = rt.warehouse
    wh.create_table(org, load_schema("tenant", "gcp_billing_export_v1"))
    wh.execute(
        f"DELETE FROM {table_ref(org, 'gcp_billing_export_v1')}"
        " WHERE usage_start_time >= TIMESTAMP(@start) AND usage_start_time < TIMESTAMP(@end)",
        {"start": start, "end": start + dt.timedelta(days=days)},
    )
    wh.insert_rows(org, "gcp_billing_export_v1", rows)
    return rows


def _wait(client: Any, runs: list[dict[str, Any]], rt: Runtime, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    for run in runs:
        while True:
            view = _expect(client.get(f"/api/v1/pipelines/runs/{run['id']}", headers=run["headers"]), 200)
            if view["status"] in FINAL or time.monotonic() > deadline:
                run["view"] = view
                break
            rt.bus.drain(timeout=0.5) if hasattr(rt.bus, "drain") else time.sleep(0.2)


def run_demo(rt: Runtime, console: Console, *, days: int = 3) -> int:
    """Run the demo; 0 only when every run is COMPLETE and every day reconciles."""
    started = time.monotonic()
    client = create_wsgi_app("both").test_client()
    root = {"X-CA-Root-Key": rt.settings.ca_root_api_key.get_secret_value()}  # type: ignore[union-attr]
    _expect(client.post("/api/v1/admin/bootstrap", headers=root, json={}), 200)
    today = dt.datetime.now(dt.UTC).date()
    start = today - dt.timedelta(days=days)
    runs: list[dict[str, Any]] = []
    expected: dict[str, dict[dt.date, dict[str, float]]] = {}
    for org in TENANTS:
        headers = {"X-API-Key": _api_key(client, root, org)}
        expected[org] = daily_totals(_load_export(rt, org, start, days))
        for offset in range(days):
            day = (start + dt.timedelta(days=offset)).isoformat()
            body = {"date": day, "trigger_by": "convergence-demo"}
            accepted = _expect(
                client.post(f"/api/v1/pipelines/run/{org}/gcp/cost/cost_billing", headers=headers, json=body), 202
            )
            runs.append({"org": org, "day": day, "id": accepted["pipeline_logging_id"], "headers": headers})
    _wait(client, runs, rt)

    table = Table(title="Pipeline runs")
    for column in ("tenant", "pipeline", "date", "status", "ms", "rows", "error"):
        table.add_column(column)
    for run in runs:
        view = run["view"]
        rows = sum(s["rows_processed"] or 0 for s in view["steps"] if s["ps_type"] == "gcp.bq_etl")
        colour = "green" if view["status"] == "COMPLETE" else "red"
        table.add_row(run["org"], view["pipeline_id"], run["day"], f"[{colour}]{view['status']}[/{colour}]",
                      str(view["duration_ms"] or ""), str(rows), view["error_message"] or "")  # fmt: skip
    console.print(table)

    reconciled = True
    for org in TENANTS:
        summary = rt.warehouse.query(
            f"SELECT service_description AS service, currency, ROUND(SUM(cost), 6) AS cost,"
            f" ROUND(SUM(credits), 6) AS credits, ROUND(SUM(net_cost), 6) AS net_cost"
            f" FROM {table_ref(org, 'billing_cost_daily')} WHERE usage_date >= @start AND usage_date < @end"
            f" GROUP BY service, currency ORDER BY net_cost DESC",
            {"start": start, "end": today},
        )
        costs = Table(title=f"{org}: GCP cost by service, {start} to {today - dt.timedelta(days=1)} (UTC)")
        for column in ("service", "currency", "cost", "credits", "net cost"):
            costs.add_column(column, justify="right" if column not in ("service", "currency") else "left")
        for row in summary:
            costs.add_row(row["service"], row["currency"], f"{row['cost']:,.2f}", f"{row['credits']:,.2f}",
                          f"{row['net_cost']:,.2f}")  # fmt: skip
        total_cost = sum(r["cost"] for r in summary)
        total_credits = sum(r["credits"] for r in summary)
        want_cost = sum(v["cost"] for v in expected[org].values())
        want_credits = sum(v["credits"] for v in expected[org].values())
        ok = math.isclose(total_cost, want_cost, rel_tol=1e-9, abs_tol=1e-6) and math.isclose(
            total_credits, want_credits, rel_tol=1e-9, abs_tol=1e-6
        )
        reconciled &= ok
        costs.add_row("[bold]total[/bold]", "USD", f"[bold]{total_cost:,.2f}", f"{total_credits:,.2f}",
                      f"[bold]{total_cost + total_credits:,.2f}")  # fmt: skip
        console.print(costs)
        verdict = "[green]reconciled[/green]" if ok else "[red]does NOT reconcile[/red]"
        console.print(f"{org}: export total cost {want_cost:,.6f}, credits {want_credits:,.6f} → {verdict}")

    complete = sum(1 for r in runs if r["view"]["status"] == "COMPLETE")
    elapsed = time.monotonic() - started
    console.print(
        f"{complete}/{len(runs)} runs COMPLETE, costs {'reconciled' if reconciled else 'NOT reconciled'};"
        f" state kept in {rt.settings.convergence_home}; demo took {elapsed:.1f} s"
    )
    return 0 if complete == len(runs) and reconciled else 1
