"""`convergence demo`: every supported provider end to end on one machine, through the HTTP API and the bus.

Bootstraps; onboards acme_demo and globex_demo (or rotates their keys when an earlier demo onboarded them);
loads each provider's sample data where the platform reads it from; sets up the integrations; runs every
provider's pipeline through the API (202) and the bus; prints the runs and, per tenant, the cost summary
by provider and by service; and reconciles each provider's FOCUS total with the total its source bills.

acme_demo: Google Cloud (billing export), OpenAI and Anthropic (cost APIs, answered by the local replay
server in provider_apis.py, which the caller starts and points the runtime's settings at).
globex_demo: AWS (Cost and Usage Report) and Azure (cost export), from the vendored public samples.
"""

from __future__ import annotations

import datetime as dt
import time

from rich.console import Console

from convergence.demo.api import DemoApi, Run
from convergence.demo.provider_apis import ProviderApiServer
from convergence.demo.report import (
    currency_totals,
    provider_table,
    quality_warnings,
    reconcile,
    runs_table,
    service_table,
    verdict,
    warnings_line,
)
from convergence.demo.tenants import TenantPlan, prepare_acme, prepare_globex
from common.runtime import Runtime

REPLAY_NOTE = "(OpenAI and Anthropic answered by a local replay server)"


def _run_waves(api: DemoApi, plans: list[TenantPlan]) -> list[Run]:
    """Start each wave's runs of every tenant, wait for them all, then start the next wave."""
    for index in range(max(len(plan.waves) for plan in plans)):
        wave = [api.start(run) for plan in plans if index < len(plan.waves) for run in plan.waves[index]]
        api.wait(wave)
    return [run for plan in plans for wave in plan.waves for run in wave]


def _describe(plan: TenantPlan) -> str:
    providers = ", ".join(plan.expected)
    return (
        f"{plan.org} ({'onboarded' if plan.onboarded else 'already onboarded; API key rotated'}): {providers}"
    )


def run_demo(rt: Runtime, console: Console, replay: ProviderApiServer, *, days: int = 3) -> int:
    """Run the demo; 0 only when every run is COMPLETE and every tenant's costs reconcile."""
    started = time.monotonic()
    api = DemoApi(rt)
    api.bootstrap()
    console.print(f"OpenAI and Anthropic cost APIs at {replay.base_url} {REPLAY_NOTE}", soft_wrap=True)
    start = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
    plans = [prepare_acme(api, replay, start, days), prepare_globex(api)]
    for plan in plans:
        console.print(_describe(plan), soft_wrap=True)

    runs = _run_waves(api, plans)
    console.print(runs_table(runs))

    reconciled = True
    for plan in plans:
        first, last = plan.start.isoformat(), plan.end.isoformat()
        by_provider = api.cost_summary(plan.org, first, last, "provider")
        by_service = api.cost_summary(plan.org, first, last, "service")
        checks = reconcile(plan, by_provider)
        reconciled &= bool(checks) and all(check.matches for check in checks)
        console.print(provider_table(plan, checks))
        console.print(service_table(plan, by_service))
        console.print(f"{plan.org} total, {first} to {last}: {currency_totals(by_provider)}", soft_wrap=True)
        console.print(verdict(plan, checks), soft_wrap=True)
        warned = warnings_line(plan.org, quality_warnings(rt.warehouse, plan.org, runs))
        if warned:
            console.print(warned, soft_wrap=True)

    complete = sum(1 for run in runs if run.status == "COMPLETE")
    elapsed = time.monotonic() - started
    console.print(
        f"{complete}/{len(runs)} runs COMPLETE, costs {'reconciled' if reconciled else 'NOT reconciled'};"
        f" state kept in {rt.settings.convergence_home}; demo took {elapsed:.1f} s",
        soft_wrap=True,
    )
    return 0 if complete == len(runs) and reconciled else 1
