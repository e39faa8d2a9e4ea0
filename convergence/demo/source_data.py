"""The demo tenants' source data, put where each provider's data would be, and its totals as the source says.

- Google Cloud: a seeded standard usage cost export in a table of the tenant's own dataset, where an
  embedded deployment reads a billing export from (a tenant's BigQuery export on Google Cloud).
- AWS and Azure: the vendored public sample files, copied under the platform's file source roots.
- OpenAI and Anthropic: nothing to load; the replay server answers their cost APIs (provider_apis.py).

The totals are computed here in plain Python from the same data (generator rows, CSV files), independently
of the pipelines and of SQL, so the demo's reconciliation compares two different computations.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import math
import secrets
import shutil
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from convergence.demo.gcp_billing import daily_totals, generate_billing_export
from common.metadata.schemas import load_schema
from common.settings import Settings
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

SEED = 2026
GCP_SOURCE_TABLE = "gcp_billing_export_source"
SAMPLES = Path(__file__).resolve().parent / "samples"
AWS_SAMPLE = SAMPLES / "aws_cur_legacy_2023_11.csv.gz"
AZURE_SAMPLE = SAMPLES / "azure_ea_export_2023_09.csv.gz"

Totals = dict[str, float]  # currency → total


def load_gcp_export(wh: Warehouse, org: str, start: dt.date, days: int) -> Totals:
    """Write `days` days of the tenant's billing export into its source table (replacing those days).

    Returns the export's own total per currency: cost plus credits, from the generator's daily totals.
    """
    rows = generate_billing_export(org, start, days, seed=SEED)
    schema = load_schema("tenant", "gcp_billing_export_v1").model_copy(update={"name": GCP_SOURCE_TABLE})
    wh.create_table(org, schema)
    wh.execute(
        f"DELETE FROM {table_ref(org, GCP_SOURCE_TABLE)}"
        " WHERE usage_start_time >= TIMESTAMP(@start) AND usage_start_time < TIMESTAMP(@end)",
        {"start": start, "end": start + dt.timedelta(days=days)},
    )
    wh.insert_rows(org, GCP_SOURCE_TABLE, rows)
    currencies = {row["currency"] for row in rows}
    if len(currencies) != 1:
        raise ValueError(f"the generated export has {len(currencies)} currencies; the demo expects one")
    per_day = daily_totals(rows).values()
    return {currencies.pop(): math.fsum(day["cost"] + day["credits"] for day in per_day)}


def gcp_service_account_key(project: str) -> dict[str, str]:
    """A service account key file with a freshly generated RSA key, as the gcp integration takes it.

    In embedded mode the export is read inside the platform's own engine, so the key is only stored
    (encrypted) and never used to call Google.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"convergence-billing-reader@{project}.iam.gserviceaccount.com",
        "client_id": str(10**20 + secrets.randbelow(9 * 10**20)),  # 21 digits, as Google issues them
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def place_sample(settings: Settings, org: str, folder: str, sample: Path) -> Path:
    """Copy a sample file into `<first source root>/<org>/<folder>/` and return that folder (absolute).

    File sources may read only under the source roots (FILE_SOURCE_ROOTS, default CONVERGENCE_HOME/sources).
    """
    destination = settings.source_roots[0] / org / folder
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample, destination / sample.name)
    return destination


def csv_totals(path: Path, amount_column: str, currency_column: str) -> Totals:
    """Sum of a gzipped CSV's amount column per currency, read with the csv module (exact decimals)."""
    sums: dict[str, Decimal] = defaultdict(Decimal)
    with gzip.open(path, "rt", newline="", encoding="utf-8-sig") as stream:
        for row in csv.DictReader(stream):
            sums[row[currency_column]] += Decimal(row[amount_column] or "0")
    return {currency: float(total) for currency, total in sums.items()}


def aws_sample_totals() -> Totals:
    return csv_totals(AWS_SAMPLE, "lineItem/UnblendedCost", "lineItem/CurrencyCode")


def azure_sample_totals() -> Totals:
    return csv_totals(AZURE_SAMPLE, "CostInBillingCurrency", "BillingCurrencyCode")


def replay_totals(replay: Any, provider: str, start: dt.date, days: int) -> Totals:
    """What the replayed provider API bills for the window, in dollars, exact until the final float."""
    total = sum(
        (replay.expected_total(provider, start + dt.timedelta(days=offset)) for offset in range(days)),
        Decimal(0),
    )
    return {"USD": float(total)}
