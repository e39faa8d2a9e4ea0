"""The two demo tenants: who they are, which providers they use, what they run and what their sources bill.

acme_demo uses Google Cloud, OpenAI and Anthropic: a few recent days of each. globex_demo uses AWS and
Azure: one billing month of each, from the vendored public samples (AWS in USD, Azure in CAD).
Each tenant's integrations are set up through the API exactly as a tenant would set them up.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass, field

from convergence.demo.api import DemoApi, Run
from convergence.demo.provider_apis import ProviderApiServer
from convergence.demo.source_data import (
    AWS_SAMPLE,
    AZURE_SAMPLE,
    GCP_SOURCE_TABLE,
    Totals,
    aws_sample_totals,
    azure_sample_totals,
    gcp_service_account_key,
    load_gcp_export,
    place_sample,
    replay_totals,
)

ACME = "acme_demo"
GLOBEX = "globex_demo"
AWS_ROLE = "arn:aws:iam::123456789012:role/convergence-cur-reader"
AWS_MONTH_DAY = "2023-11-15"  # the AWS sample's billing month
AZURE_MONTH_DAY = "2023-09-15"  # the Azure sample's billing month


@dataclass
class TenantPlan:
    """One tenant's part of the demo.

    `waves` run one after another (a later wave reads what an earlier one loaded); `expected` is each
    provider's own total per currency (FOCUS ProviderName → currency → amount) over [start, end].
    """

    org: str
    company: str
    email: str
    start: dt.date
    end: dt.date
    waves: list[list[Run]] = field(default_factory=list)
    expected: dict[str, Totals] = field(default_factory=dict)
    onboarded: bool = False


def _daily(org: str, path: str, start: dt.date, days: int) -> list[Run]:
    provider, domain, template = path.split("/")
    return [
        Run(org, provider, domain, template, (start + dt.timedelta(days=offset)).isoformat())
        for offset in range(days)
    ]


def prepare_acme(api: DemoApi, replay: ProviderApiServer, start: dt.date, days: int) -> TenantPlan:
    """Onboard acme_demo, load its GCP export, point its gcp, openai and anthropic integrations at them."""
    plan = TenantPlan(
        ACME, "Acme Corporation", "finops@acme.example.com", start, start + dt.timedelta(days=days - 1)
    )
    plan.onboarded = api.onboard(plan.org, plan.company, plan.email)
    settings = api.rt.settings
    gcp_total = load_gcp_export(api.rt.warehouse, plan.org, start, days)
    export_table = f"{settings.gcp_project_id}.{plan.org}.{GCP_SOURCE_TABLE}"
    api.setup_integration(
        plan.org,
        "gcp",
        gcp_service_account_key(settings.gcp_project_id),
        {"billing_export_table": export_table},
    )
    api.setup_integration(plan.org, "openai", replay.keys["openai"])
    api.setup_integration(plan.org, "anthropic", replay.keys["anthropic"])
    plan.waves = [
        [
            *_daily(plan.org, "gcp/cost/billing_focus", start, days),
            *_daily(plan.org, "openai/cost/costs_focus", start, days),
            *_daily(plan.org, "anthropic/cost/costs_focus", start, days),
        ],
        # The daily cost table reads gcp_billing_export_v1, which billing_focus fills from the export.
        _daily(plan.org, "gcp/cost/cost_billing", start, days),
    ]
    plan.expected = {
        "Google Cloud": gcp_total,
        "OpenAI": replay_totals(replay, "openai", start, days),
        "Anthropic": replay_totals(replay, "anthropic", start, days),
    }
    return plan


def prepare_globex(api: DemoApi) -> TenantPlan:
    """Onboard globex_demo, copy the AWS and Azure samples under the source roots, set up both integrations."""
    plan = TenantPlan(
        GLOBEX, "Globex Industries", "cloud@globex.example.com", dt.date(2023, 9, 1), dt.date(2023, 11, 30)
    )
    plan.onboarded = api.onboard(plan.org, plan.company, plan.email)
    settings = api.rt.settings
    cur = place_sample(settings, plan.org, "aws/cur", AWS_SAMPLE)
    export = place_sample(settings, plan.org, "azure/export", AZURE_SAMPLE)
    api.setup_integration(plan.org, "aws", AWS_ROLE, {"cur_location": str(cur)})
    principal = {
        "tenant_id": str(uuid.uuid4()),
        "client_id": str(uuid.uuid4()),
        "client_secret": secrets.token_urlsafe(30),
    }
    api.setup_integration(plan.org, "azure", principal, {"export_location": str(export)})
    plan.waves = [
        [
            Run(plan.org, "aws", "cost", "cur_focus", AWS_MONTH_DAY),
            Run(plan.org, "azure", "cost", "export_focus", AZURE_MONTH_DAY),
        ]
    ]
    plan.expected = {"AWS": aws_sample_totals(), "Microsoft": azure_sample_totals()}
    return plan
