"""Seeded, deterministic generator of Google Cloud Billing standard export rows.

Rows match ``configs/schemas/tenant/gcp_billing_export_v1.json`` exactly: every
column is present (``None`` for empty NULLABLE values, ``[]`` for empty REPEATED
ones), RECORDs are dicts, TIMESTAMPs are UTC-aware ``datetime.datetime``.
Monetary values are produced in integer micro-dollars and converted to floats,
so every ``cost``/credit ``amount`` has at most 6 decimals.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import math
import random
import re
from typing import NamedTuple

UTC = datetime.UTC
MONTH_HOURS = 730.0  # Google prices "month" units as 730 hours.
GIB = 2**30

_COMPUTE = ("6F81-5844-456A", "Compute Engine")
_GCS = ("95FF-2EF5-5EA1", "Cloud Storage")
_BQ = ("24E6-581D-38E5", "BigQuery")
_RUN = ("152E-C115-5142", "Cloud Run")
_SQL = ("9662-B51E-5089", "Cloud SQL")
_NET = ("E505-1604-58F8", "Networking")
_VERTEX = ("C7E2-9256-1C43", "Vertex AI")
_GKE = ("CCD8-9BF1-090E", "Kubernetes Engine")
_LOGGING = ("5490-F7B7-8DF6", "Cloud Logging")


class _Sku(NamedTuple):
    service: tuple[str, str]  # (id, description)
    id: str
    description: str
    unit: str
    pricing_unit: str
    factor: float  # usage units per pricing unit
    price: float  # USD list price per pricing unit
    qty: tuple[float, float] | None  # hourly pricing units (GiB stored for "month"); None: machine spec
    location: str  # zone / region / multi / global
    credit_types: tuple[str, ...] = ()
    spec: str | None = None  # "core" / "ram": quantity derived from an n2-standard machine


# fmt: off
_CATALOG = [_Sku(*entry) for entry in [
    (_COMPUTE, "BB77-5FDA-69D9", "N2 Instance Core running in Americas", "seconds", "hour",
     3600.0, 0.031611, None, "zone", ("SUSTAINED_USAGE_DISCOUNT", "COMMITTED_USAGE_DISCOUNT"), "core"),
    (_COMPUTE, "5B01-D157-A097", "N2 Instance Ram running in Americas", "byte-seconds", "gibibyte hour",
     3600.0 * GIB, 0.004237, None, "zone", ("SUSTAINED_USAGE_DISCOUNT", "COMMITTED_USAGE_DISCOUNT"), "ram"),
    (_COMPUTE, "D973-5D65-BAB2", "Storage PD Capacity", "byte-seconds", "gibibyte month",
     3600.0 * GIB * MONTH_HOURS, 0.04, (50.0, 2000.0), "region"),
    (_GCS, "E5F0-6A5D-7BAD", "Standard Storage US Multi-region", "byte-seconds", "gibibyte month",
     3600.0 * GIB * MONTH_HOURS, 0.026, (200.0, 20000.0), "multi"),
    (_GCS, "1E8D-6BB3-0D2C", "Multi-Region Standard Class A Operations", "requests", "10 thousand requests",
     10000.0, 0.05, (0.5, 40.0), "multi", ("FREE_TIER",)),
    (_BQ, "F17B-412E-CB64", "Analysis", "bytes", "tebibyte",
     float(2**40), 6.25, (0.01, 1.5), "multi", ("FREE_TIER",)),
    (_BQ, "E6C5-7ECE-3B3F", "Active Logical Storage", "byte-seconds", "gibibyte month",
     3600.0 * GIB * MONTH_HOURS, 0.02, (500.0, 50000.0), "multi", ("FREE_TIER",)),
    (_RUN, "8C9B-7B5F-8C3A", "CPU Allocation Time", "seconds", "vCPU-second",
     1.0, 0.000024, (300.0, 30000.0), "region", ("FREE_TIER",)),
    (_RUN, "7B2D-4B62-A2B4", "Memory Allocation Time", "byte-seconds", "gibibyte second",
     float(GIB), 0.0000025, (600.0, 60000.0), "region", ("FREE_TIER",)),
    (_SQL, "A3A6-C1E5-2E3B", "Cloud SQL for PostgreSQL: Zonal - vCPU in Americas", "seconds", "hour",
     3600.0, 0.0413, (2.0, 16.0), "zone", ("COMMITTED_USAGE_DISCOUNT",)),
    (_SQL, "6C29-1F5E-9D07", "Cloud SQL for PostgreSQL: Zonal - RAM in Americas",
     "byte-seconds", "gibibyte hour", 3600.0 * GIB, 0.007, (8.0, 64.0), "zone",
     ("COMMITTED_USAGE_DISCOUNT",)),
    (_NET, "9DE9-9092-B3BC", "Network Internet Data Transfer Out from Americas to Americas",
     "bytes", "gibibyte", float(GIB), 0.12, (0.5, 80.0), "region"),
    (_VERTEX, "2F8B-3E1A-6B0C",
     "Vertex AI: Online/Batch Prediction N1 Predefined Instance Core running in Americas", "seconds", "hour",
     3600.0, 0.0436, (2.0, 32.0), "region", ("PROMOTION",)),
    (_GKE, "B561-BFBD-1264", "Regional Kubernetes Clusters", "seconds", "hour",
     3600.0, 0.10, (1.0, 1.0), "region"),
    (_GKE, "4F9D-1A43-A2B3", "Zonal Kubernetes Clusters", "seconds", "hour",
     3600.0, 0.10, (1.0, 1.0), "zone", ("FREE_TIER",)),
    (_LOGGING, "143F-A1B0-E0BE", "Log Storage cost", "bytes", "gibibyte",
     float(GIB), 0.50, (0.1, 12.0), "global"),
]]
# fmt: on
_REGIONS = ("us-central1", "us-east1", "us-west1", "us-east4")
_ENVS = ("prod", "staging", "dev", "data", "ml", "shared")
_TEAMS = ("platform", "payments", "search", "analytics", "growth", "ml-research")
_APPS = ("api", "web", "etl", "ingest", "reporting", "recommender", "auth")
_CREDIT_SHARE = {  # fraction range of the remaining (uncredited) cost
    "SUSTAINED_USAGE_DISCOUNT": (0.10, 0.30),
    "COMMITTED_USAGE_DISCOUNT": (0.20, 0.55),
    "FREE_TIER": (0.50, 1.00),
    "PROMOTION": (0.05, 0.25),
}
_ADJ_TYPES = {  # type -> (description, may be a charge rather than a refund)
    "USAGE_CORRECTION": ("Usage correction", True),
    "PRICE_CORRECTION": ("Price correction", True),
    "GOODWILL": ("Goodwill credit", False),
    "SLA_CREDIT": ("SLA credit", False),
}
_ADJ_MODES = ("MANUAL_ADJUSTMENT", "PARTIAL_CORRECTION")


def _rng(*parts: object) -> random.Random:
    """Return a ``random.Random`` seeded by a process-independent hash of *parts*."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _hexid(rng: random.Random, groups: tuple[int, ...]) -> str:
    """Random upper-case hex groups joined by dashes, e.g. ``01A2B3-C4D5E6-F7A8B9``."""
    return "-".join("".join(rng.choice("0123456789ABCDEF") for _ in range(n)) for n in groups)


def _kv(mapping: dict[str, str]) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted(mapping.items())]


def _money(micros: int) -> float:
    return micros / 1_000_000


def _tenant_profile(tenant_id: str, seed: int) -> dict:
    """Billing account, organization and projects for a tenant (stable per tenant/seed)."""
    rng = _rng("gcp-tenant", tenant_id, seed)
    slug = re.sub(r"[^a-z0-9]+", "-", tenant_id.lower()).strip("-")[:14].strip("-") or "tenant"
    slug = slug if slug[0].isalpha() else f"t-{slug}"[:14].strip("-")  # project ids start with a letter
    org = str(rng.randint(10**11, 10**12 - 1))
    folders = {name: str(rng.randint(10**11, 10**12 - 1)) for name in ("production", "non-production")}
    projects = []
    for env in rng.sample(_ENVS, rng.randint(3, 5)):
        number = str(rng.randint(10**11, 10**12 - 1))
        folder = "production" if env in ("prod", "data", "shared") else "non-production"
        pid = f"{slug}-{env}-{rng.randint(1000, 9999)}"
        team, cost_center = rng.choice(_TEAMS), f"cc-{rng.randint(100, 999)}"
        projects.append(
            {
                "id": pid,
                "number": number,
                "name": f"{slug} {env}",
                "labels": _kv({"env": env, "team": team, "cost-center": cost_center}),
                "ancestry_numbers": f"/{org}/{folders[folder]}/",
                "ancestors": [
                    {"resource_name": f"projects/{number}", "display_name": pid},
                    {"resource_name": f"folders/{folders[folder]}", "display_name": folder},
                    {"resource_name": f"organizations/{org}", "display_name": f"{slug}.example.com"},
                ],
            }
        )
    return {
        "billing_account_id": _hexid(rng, (6, 6, 6)),
        "org": org,
        "projects": projects,
        "region": rng.choice(_REGIONS),
        "promo_id": _hexid(rng, (8, 4, 4)).lower(),
        "cud_id": str(rng.randint(10**15, 10**16 - 1)),
        "promo_project": projects[0]["id"],  # project that has a promotional credit
    }


def _location(kind: str, region: str, rng: random.Random) -> dict:
    """``location`` record for a zone / region / multi(-region "us") / global SKU."""
    zone = f"{region}-{rng.choice('abc')}" if kind == "zone" else None
    regional = kind in ("zone", "region")
    location = {"global": "global", "multi": "us", "region": region, "zone": zone}[kind]
    country = None if kind == "global" else "US"
    return {"location": location, "country": country, "region": region if regional else None, "zone": zone}


def _credit(ctype: str, micros: int, sku: _Sku, profile: dict) -> dict:
    promo, cud = profile["promo_id"], f"commitments/{profile['cud_id']}"
    names = {
        "SUSTAINED_USAGE_DISCOUNT": ("Sustained Usage Discount", None, f"SustainedUsageDiscount:{sku.id}"),
        "COMMITTED_USAGE_DISCOUNT": (
            f"Committed Usage Discount: {sku.description}",
            "Committed use discount",
            cud,
        ),
        "FREE_TIER": (f"Free Tier: {sku.description}", None, f"FreeTier:{sku.id}"),
        "PROMOTION": ("Free Trial", f"Free trial credit {promo}", f"GCPCredit:{promo}"),
    }
    name, full_name, cid = names[ctype]
    return {"name": name, "amount": _money(-micros), "full_name": full_name, "id": cid, "type": ctype}


def _row(profile: dict, project: dict, sku: _Sku, start: datetime.datetime, rng: random.Random) -> dict:
    """Build a row skeleton (cost fields are filled by the caller)."""
    svc_id, svc_desc = sku.service
    env = next(lb["value"] for lb in project["labels"] if lb["key"] == "env")
    labels = {"env": env, "app": rng.choice(_APPS)}
    if svc_desc == "Kubernetes Engine":
        labels["goog-k8s-cluster-name"] = f"{env}-cluster"
    end = start + datetime.timedelta(hours=1)
    lag = datetime.timedelta(hours=rng.randint(2, 8), minutes=rng.randrange(60), seconds=rng.randrange(60))
    tag_value = "production" if env == "prod" else "non-production"
    tag = {"key": "environment", "value": tag_value, "inherited": True, "namespace": profile["org"]}
    tags = [tag] if rng.random() < 0.3 else []
    return {
        "billing_account_id": profile["billing_account_id"],
        "service": {"id": svc_id, "description": svc_desc},
        "sku": {"id": sku.id, "description": sku.description},
        "usage_start_time": start,
        "usage_end_time": end,
        "project": copy.deepcopy(project),  # rows never share mutable state
        "labels": _kv(labels),
        "system_labels": [],
        "location": _location(sku.location, profile["region"], rng),
        "export_time": end + lag,
        "cost": 0.0,
        "currency": "USD",
        "currency_conversion_rate": 1.0,
        "usage": {
            "amount": 0.0,
            "unit": sku.unit,
            "amount_in_pricing_units": 0.0,
            "pricing_unit": sku.pricing_unit,
        },
        "credits": [],
        "invoice": {"month": start.strftime("%Y%m"), "publisher_type": "Google"},
        "cost_type": "regular",
        "adjustment_info": {"id": None, "description": None, "mode": None, "type": None},
        "tags": tags,
        "cost_at_list": 0.0,
        "transaction_type": "GOOGLE",
        "seller_name": "Google",
    }


def _regular(profile: dict, start: datetime.datetime, rng: random.Random) -> tuple[dict, int]:
    """A priced usage row; returns (row, cost in micro-dollars)."""
    sku = rng.choice(_CATALOG)
    project = rng.choice(profile["projects"])
    row = _row(profile, project, sku, start, rng)
    if sku.spec:
        cores = rng.choice((2, 4, 8, 16))
        uptime = 1.0 if rng.random() < 0.7 else round(rng.uniform(0.1, 1.0), 4)
        qty = cores * uptime * (4 if sku.spec == "ram" else 1)
        spec = {"machine_spec": f"n2-standard-{cores}", "cores": str(cores), "memory": str(cores * 4096)}
        row["system_labels"] = _kv({f"compute.googleapis.com/{k}": v for k, v in spec.items()})
    else:
        qty = rng.uniform(*sku.qty)
        if sku.pricing_unit.endswith("month"):  # range is GiB stored; one hour is 1/730 month
            qty /= MONTH_HOURS
    qty = round(qty, 6)
    list_micros = max(1, round(qty * sku.price * 1_000_000))
    cost_micros = round(list_micros * (1 - rng.choice((0.0, 0.0, 0.05, 0.1, 0.15))))
    row["usage"]["amount_in_pricing_units"] = qty
    amount = qty * sku.factor
    row["usage"]["amount"] = round(amount, 6) if sku.unit == "seconds" else float(round(amount))
    row["cost"] = _money(cost_micros)
    row["cost_at_list"] = _money(list_micros)
    remaining, credit_types = cost_micros, sku.credit_types
    if project["id"] == profile["promo_project"] and "PROMOTION" not in credit_types:
        credit_types += ("PROMOTION",)
    for ctype in credit_types:
        if remaining > 0 and rng.random() < 0.4:
            micros = math.floor(remaining * rng.uniform(*_CREDIT_SHARE[ctype]))
            if micros > 0:
                row["credits"].append(_credit(ctype, micros, sku, profile))
                remaining -= micros
    return row, cost_micros


def _special(profile: dict, when: datetime.datetime, rng: random.Random, cost_type: str, micros: int) -> dict:
    """A tax / adjustment / rounding_error row carrying *micros* of cost and no usage.

    Adjustments are refunds (negative) except some usage/price corrections.
    """
    sku = rng.choice(_CATALOG)
    row = _row(profile, rng.choice(profile["projects"]), sku, when, rng)
    row.update(cost_type=cost_type, cost=_money(micros), cost_at_list=_money(micros), tags=[])
    if cost_type == "adjustment":
        adj_type = rng.choice(sorted(_ADJ_TYPES))
        text, may_charge = _ADJ_TYPES[adj_type]
        if not may_charge or rng.random() < 0.8:
            row["cost"] = row["cost_at_list"] = _money(-abs(micros))
        row["adjustment_info"] = {
            "id": _hexid(rng, (8, 4, 4, 4, 12)).lower(),
            "description": f"{text} for {sku.service[1]} ({sku.description})",
            "mode": rng.choice(_ADJ_MODES),
            "type": adj_type,
        }
    return row


def generate_billing_export(
    tenant_id: str, start: datetime.date, days: int, seed: int = 0, rows_per_day: int = 40
) -> list[dict]:
    """Generate ``days`` days of standard-export rows for ``tenant_id`` starting at ``start``.

    Each day D gets ``rows_per_day`` regular usage rows (at least one at 00:00 and
    one at 23:00 UTC) plus one ``tax``, one ``adjustment`` and one ``rounding_error``
    row, all with ``usage_start_time`` in [D 00:00, D+1 00:00) UTC. A day's rows depend
    only on (tenant_id, seed, D, rows_per_day), so overlapping windows agree.
    Rows are ordered by ``usage_start_time`` and share no mutable state.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    if rows_per_day < 2:
        raise ValueError("rows_per_day must be >= 2 (one row each side of UTC midnight)")
    if isinstance(start, datetime.datetime):
        start = start.date()
    profile = _tenant_profile(tenant_id, seed)
    rows: list[dict] = []
    for offset in range(days):
        day = start + datetime.timedelta(days=offset)
        rng = _rng("gcp-day", tenant_id, seed, day.isoformat(), rows_per_day)
        midnight = datetime.datetime(day.year, day.month, day.day, tzinfo=UTC)
        hours = [0, 23] + [rng.randrange(24) for _ in range(rows_per_day - 2)]
        day_rows, day_micros = [], 0
        for hour in hours:
            row, micros = _regular(profile, midnight + datetime.timedelta(hours=hour), rng)
            day_rows.append(row)
            day_micros += micros
        specials = (
            ("tax", max(1, round(day_micros * rng.uniform(0.04, 0.09)))),
            ("adjustment", max(10_000, round(day_micros * rng.uniform(0.01, 0.08)))),
            ("rounding_error", rng.randint(1, 10_000) * rng.choice((1, -1))),
        )
        for cost_type, micros in specials:
            when = midnight + datetime.timedelta(hours=rng.randrange(24))
            day_rows.append(_special(profile, when, rng, cost_type, micros))
        day_rows.sort(key=lambda r: r["usage_start_time"])  # stable: generation order breaks ties
        rows.extend(day_rows)
    return rows


def daily_totals(rows) -> dict[datetime.date, dict]:
    """Per UTC ``usage_start_time`` day: ``{"cost": sum(cost), "credits": sum(credit amounts)}``.

    Sums use ``math.fsum`` and are rounded to 6 decimals (the precision of the inputs).
    """
    costs: dict[datetime.date, list[float]] = {}
    credits: dict[datetime.date, list[float]] = {}
    for row in rows:
        day = row["usage_start_time"].astimezone(UTC).date()
        costs.setdefault(day, []).append(row["cost"])
        credits.setdefault(day, []).extend(c["amount"] for c in row.get("credits") or ())
    return {
        day: {"cost": round(math.fsum(costs[day]), 6), "credits": round(math.fsum(credits.get(day, [])), 6)}
        for day in sorted(costs)
    }
