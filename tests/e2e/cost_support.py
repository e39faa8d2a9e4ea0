"""What the FOCUS cost template suites share: the samples' own totals, a platform they run on, its tenants.

The expected figures are computed here from the source files with `csv` and `Decimal` (and from the
generators' and the replay server's own data), never from the platform's tables, so a template that loses,
doubles or mis-types a row cannot agree with them by construction.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.settings import get_settings, reset_settings
from common.warehouse.sql import table_ref
from common.wiring import build_runtime, set_runtime
from convergence.demo.gcp_billing import daily_totals, generate_billing_export
from tests.conftest import ROOT_KEY, SETTINGS_VARIABLES, function_client
from tests.e2e.support import assert_json

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
AWS_SAMPLE = DATA / "aws" / "cur_legacy_sample.csv"
AZURE_SAMPLE = DATA / "azure" / "ea_export_sample.csv"
FOCUS_SAMPLE = DATA / "focus" / "focus_1_0_sample.csv"

AWS_MONTH = "2023-11-15"  # the CUR sample's billing period is November 2023
AZURE_MONTH = "2023-09-15"  # the EA export's billing period is September 2023
FOCUS_MONTH = "2024-09-15"  # 999 of the FOCUS sample's rows; one Oracle row is of October
FOCUS_NEXT_MONTH = "2024-10-15"
GCP_DAYS = (dt.date(2024, 5, 1), dt.date(2024, 5, 2))
AI_DAY = dt.date(2025, 8, 1)
GCP_SOURCE_TABLE = "gcp_billing_export_source"
GCP_SEED = 7
PROVIDER_API_SEED = 11

AWS_ROLE = "arn:aws:iam::123456789012:role/x"
AZURE_PRINCIPAL = {
    "tenant_id": "7f3c2a10-1b2c-4d5e-8f90-123456789abc",
    "client_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    "client_secret": "a-client-secret-of-the-app",
}
TEMPLATES = {
    "aws": "aws/cost/cur_focus",
    "azure": "azure/cost/export_focus",
    "focus": "focus/cost/import",
    "gcp": "gcp/cost/billing_focus",
    "openai": "openai/cost/costs_focus",
    "anthropic": "anthropic/cost/costs_focus",
}
CHARGE_FREQUENCIES = ("One-Time", "Recurring", "Usage-Based")
# The FOCUS 1.2 unit format the import checks PricingUnit against (configs/focus/cost/import.yml).
FOCUS_UNIT = re.compile(
    r"^([0-9]+ )?[A-Za-z][A-Za-z0-9]*( [A-Za-z][A-Za-z0-9]*)*"
    r"((-(Years|Months|Days|Hours|Minutes|Seconds))|(/(Year|Month|Day|Hour|Minute|Second)))?$"
)


# -- the sources' own figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Rows and the exact total of a source, in its currency."""

    rows: int
    total: Decimal
    currency: str


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def one_currency(values: Iterable[str]) -> str:
    currencies = set(values)
    assert len(currencies) == 1, currencies
    return currencies.pop()


def aws_figures() -> Figures:
    """The CUR sample's line items: their number and the sum of lineItem/UnblendedCost."""
    rows = csv_rows(AWS_SAMPLE)
    total = sum((Decimal(r["lineItem/UnblendedCost"]) for r in rows), Decimal(0))
    return Figures(len(rows), total, one_currency(r["lineItem/CurrencyCode"] for r in rows))


def azure_figures() -> Figures:
    """The EA export's rows and the sum of CostInBillingCurrency."""
    rows = csv_rows(AZURE_SAMPLE)
    total = sum((Decimal(r["CostInBillingCurrency"]) for r in rows), Decimal(0))
    return Figures(len(rows), total, one_currency(r["BillingCurrencyCode"] for r in rows))


def focus_sample_rows(month: str) -> list[dict[str, str]]:
    """The FOCUS sample's rows whose billing period starts in the month of `month` (YYYY-MM-DD)."""
    return [r for r in csv_rows(FOCUS_SAMPLE) if r["BillingPeriodStart"][:7] == month[:7]]


def focus_figures(month: str) -> Figures:
    rows = focus_sample_rows(month)
    total = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    return Figures(len(rows), total, one_currency(r["BillingCurrency"] for r in rows))


def focus_rule_breaks(month: str) -> dict[str, int]:
    """Rows of the month breaking each FOCUS 1.2 rule the import checks, counted in Python from the file."""
    rows = focus_sample_rows(month)
    everything = csv_rows(FOCUS_SAMPLE)
    categories: dict[str, set[str]] = defaultdict(set)
    for row in everything:
        if row.get("ServiceCategory"):
            categories[row["ServiceName"]].add(row["ServiceCategory"])
    mixed = {name for name, values in categories.items() if len(values) > 1}

    def blank(row: dict[str, str], column: str) -> bool:
        return row.get(column) in (None, "", "NULL")

    return {
        "source_contracted_cost_present": sum(blank(r, "ContractedCost") for r in rows),
        "source_service_subcategory_present": sum(blank(r, "ServiceSubcategory") for r in rows),
        "source_charge_frequency_values": sum(
            not blank(r, "ChargeFrequency") and r["ChargeFrequency"] not in CHARGE_FREQUENCIES for r in rows
        ),
        "source_invoice_issuer_is_provider": sum(
            not blank(r, "InvoiceIssuerName") and r["InvoiceIssuerName"] != r["ProviderName"] for r in rows
        ),
        "source_pricing_unit_format": sum(
            not blank(r, "PricingUnit") and not FOCUS_UNIT.match(r["PricingUnit"]) for r in rows
        ),
        "source_one_category_per_service": sum(r["ServiceName"] in mixed for r in rows),
    }


def gcp_export_rows(tenant: str) -> list[dict[str, Any]]:
    """The tenant's billing export over GCP_DAYS, as the demo generator makes it."""
    return generate_billing_export(tenant, GCP_DAYS[0], len(GCP_DAYS), seed=GCP_SEED)


def gcp_figures(rows: list[dict[str, Any]], day: dt.date) -> Figures:
    """A day of the export: cost plus credits, from the generator's own daily totals."""
    totals = daily_totals(rows)[day]
    day_rows = [r for r in rows if r["usage_start_time"].astimezone(dt.UTC).date() == day]
    credit_rows = sum(len(r.get("credits") or ()) for r in day_rows)
    total = Decimal(str(totals["cost"])) + Decimal(str(totals["credits"]))
    return Figures(len(day_rows) + credit_rows, total, one_currency(r["currency"] for r in day_rows))


# -- the platform -----------------------------------------------------------------------------------------


def platform_runtime(home: Path, env: dict[str, str]) -> Runtime:
    """A runtime of its own (for a module's platform), built from clean settings plus `env`."""
    with pytest.MonkeyPatch.context() as mp:
        for name in SETTINGS_VARIABLES:
            mp.delenv(name, raising=False)
        mp.setenv("CONVERGENCE_HOME", str(home))
        mp.setenv("CA_ROOT_API_KEY", ROOT_KEY)
        for name, value in env.items():
            mp.setenv(name, value)
        reset_settings()
        runtime = build_runtime(get_settings())
        reset_settings()
    return runtime


def service_account_key(project: str) -> dict[str, str]:
    """A tenant's service account key file holding a real RSA key."""
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    return {
        "type": "service_account", "project_id": project, "private_key_id": "0123abcd", "private_key": pem,
        "client_email": f"cost-reader@{project}.iam.gserviceaccount.com", "client_id": "104729",
        "token_uri": "https://oauth2.googleapis.com/token",
    }  # fmt: skip


@dataclass
class Platform:
    """An onboarded platform driven through the onboard and trigger functions and the bus."""

    rt: Runtime
    source_root: Path
    onboard: Any = None
    trigger: Any = None
    keys: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_runtime(self.rt)
        self.onboard = function_client("onboard", "onboard")
        self.trigger = function_client("trigger", "trigger")
        root = {"X-CA-Root-Key": ROOT_KEY}
        assert_json(self.onboard.post("/api/v1/admin/bootstrap", headers=root, json={}), 200)

    def add_tenant(self, org: str) -> dict[str, str]:
        body = {
            "org_slug": org,
            "company_name": org.title(),
            "admin_email": f"finops@{org.replace('_', '-')}.example.com",
        }
        response = self.onboard.post(
            "/api/v1/organizations/onboard", headers={"X-CA-Root-Key": ROOT_KEY}, json=body
        )
        self.keys[org] = {"X-API-Key": assert_json(response, 201)["api_key"]}
        return self.keys[org]

    def integrate(
        self, org: str, provider: str, credential: Any, settings: dict[str, Any] | None = None
    ) -> None:
        body: dict[str, Any] = {"credential": credential}
        if settings is not None:
            body["settings"] = settings
        response = self.onboard.post(
            f"/api/v1/integrations/{org}/{provider}/setup", headers=self.keys[org], json=body
        )
        assert_json(response, 200)

    def place(self, org: str, folder: str, sample: Path, name: str | None = None) -> Path:
        """A copy of `sample` in a folder of the tenant under the source root; the folder."""
        target = self.source_root / org / folder
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, target / (name or sample.name))
        return target

    def run(self, org: str, provider: str, date: str, **variables: Any) -> dict[str, Any]:
        """A run of the provider's FOCUS template through the API, driven by the bus to its end; the run."""
        response = self.trigger.post(
            f"/api/v1/pipelines/run/{org}/{TEMPLATES[provider]}",
            headers=self.keys[org],
            json={"date": date, "trigger_by": "cost-template-suite", **variables},
        )
        run_id = assert_json(response, 202)["pipeline_logging_id"]
        assert self.rt.bus.drain(120), "the bus did not drain in time"  # type: ignore[attr-defined]
        return assert_json(self.trigger.get(f"/api/v1/pipelines/runs/{run_id}", headers=self.keys[org]), 200)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.rt.warehouse.query(sql, params or {})

    def load_gcp_export(self, org: str) -> list[dict[str, Any]]:
        """The tenant's billing export as a table of its own dataset, and the integration naming it."""
        rows = gcp_export_rows(org)
        schema = load_schema("tenant", "gcp_billing_export_v1").model_copy(update={"name": GCP_SOURCE_TABLE})
        self.rt.warehouse.create_table(org, schema)
        self.rt.warehouse.insert_rows(org, GCP_SOURCE_TABLE, rows)
        project = self.rt.settings.gcp_project_id
        self.integrate(
            org, "gcp", service_account_key(f"{org}-billing-4821"),
            {"billing_export_table": f"{project}.{org}.{GCP_SOURCE_TABLE}"},
        )  # fmt: skip
        return rows

    # -- what landed ---------------------------------------------------------------------------------------

    def focus_rows(self, org: str, source: str) -> list[dict[str, Any]]:
        """Every focus_costs row of one provider (x_Source) of the tenant."""
        return self.query(f"SELECT * FROM {table_ref(org, 'focus_costs')} WHERE x_Source = @s", {"s": source})

    def landed(
        self, org: str, source: str, where: Callable[[dict[str, Any]], bool] = lambda r: True
    ) -> Figures:
        """Rows and exact BilledCost total of a provider's focus_costs rows (each float read back as written)."""
        rows = [r for r in self.focus_rows(org, source) if where(r)]
        total = sum((Decimal(repr(r["BilledCost"])) for r in rows), Decimal(0))
        currency = one_currency(r["BillingCurrency"] for r in rows) if rows else ""
        return Figures(len(rows), total, currency)

    def check_results(self, org: str, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self.query(
            f"SELECT * FROM {table_ref(org, 'dq_results')} WHERE pipeline_logging_id = @run", {"run": run_id}
        )
        return {r["check_name"]: r for r in rows}


def in_month(date: str) -> Callable[[dict[str, Any]], bool]:
    """Rows whose billing period starts in the month of `date`."""
    return lambda r: r["BillingPeriodStart"].strftime("%Y-%m") == date[:7]


def on_day(day: dt.date) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["ChargePeriodStart"].astimezone(dt.UTC).date() == day


def fingerprint(rows: Iterable[dict[str, Any]]) -> Counter:
    """A multiset of rows (values as text) to compare a table's rows before and after a run."""
    return Counter(tuple(sorted((k, repr(v)) for k, v in r.items())) for r in rows)


def assert_complete(run: dict[str, Any]) -> None:
    """The run and each of its steps COMPLETE; only the failure notification is SKIPPED."""
    steps = {s["step_id"]: (s["status"], s["error_message"]) for s in run["steps"]}
    assert run["status"] == "COMPLETE", (run["error_message"], steps)
    expected = {step: ("SKIPPED" if step == "notify_failure" else "COMPLETE", None) for step in steps}
    assert steps == expected, steps


def step_rows(run: dict[str, Any], steps: tuple[str, ...] = ("load", "focus")) -> dict[str, int]:
    """rows_processed of the run's loading and converting steps."""
    return {s["step_id"]: s["rows_processed"] for s in run["steps"] if s["step_id"] in steps}
