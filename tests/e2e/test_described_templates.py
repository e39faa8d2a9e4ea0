"""Templates in the described system's shape, end to end: trigger over HTTP, steps driven by the bus.

The shipped examples (gcp/cost/bill-sample-export-template, gcp/example/onboarding-example) run and land
the rows and values the source holds (computed here from the export generator, not from the platform's
tables); planted templates prove that quoted placeholders travel only as query parameters, that tables are
always the tenant's own, that email steps' to_emails and message reach the outbox under both described
ps_type names, and that a bad described template is refused before any run exists.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.templates import loader
from common.warehouse.sql import table_ref
from convergence.demo.gcp_billing import generate_billing_export
from tests.conftest import wait_for_bus
from tests.e2e.support import assert_error, assert_json

DAY, NEXT_DAY = dt.date(2024, 5, 1), dt.date(2024, 5, 2)
BILL_SAMPLE = "gcp/cost/bill-sample-export-template"
ONBOARDING = "gcp/example/onboarding-example"
HOSTILE = (
    "x'; DELETE FROM `acme`.`onboarding_checks`; --",
    'y" OR 1=1; DROP TABLE `acme`.`pipeline_runs`; --',
    "{tenant_id} \\' back\\slash",
)


@pytest.fixture
def tenants(onboard_org: Callable[[str], str], runtime: Runtime) -> dict[str, dict[str, str]]:
    """acme and globex, onboarded, each with two days of its own billing export in gcp_billing_export_v1."""
    keys = {org: {"X-API-Key": onboard_org(org)} for org in ("acme", "globex")}
    wait_for_bus(runtime)  # the onboarding dry runs
    return keys


def load_export(rt: Runtime, tenant: str, seed: int) -> list[dict[str, Any]]:
    rows = generate_billing_export(tenant, DAY, 2, seed=seed)
    rt.warehouse.create_table(tenant, load_schema("tenant", "gcp_billing_export_v1"))
    rt.warehouse.insert_rows(tenant, "gcp_billing_export_v1", rows)
    return rows


def run(
    rt: Runtime, client: Any, tenants: dict[str, dict[str, str]], org: str, template: str, **body: Any
) -> Any:
    """A run of `template` for `org`, started over HTTP and driven by the bus to its end; the run."""
    response = client.post(f"/api/v1/pipelines/run/{org}/{template}", headers=tenants[org], json=body)
    run_id = assert_json(response, 202)["pipeline_logging_id"]
    wait_for_bus(rt)
    return assert_json(client.get(f"/api/v1/pipelines/runs/{run_id}", headers=tenants[org]), 200)


def steps_of(run_view: dict[str, Any]) -> dict[str, str]:
    return {step["step_id"]: step["status"] for step in run_view["steps"]}


def rows(rt: Runtime, tenant: str, table: str) -> list[dict[str, Any]]:
    return rt.warehouse.query(f"SELECT * FROM {table_ref(tenant, table)}", {})


def read_mail(rt: Runtime, tenant: str, run_id: str, step_id: str) -> EmailMessage:
    path = rt.settings.outbox_dir / tenant / f"{run_id}-{step_id}.eml"
    assert path.is_file(), sorted(p.name for p in path.parent.glob("*"))
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def recipients(message: EmailMessage) -> list[str]:
    return [address.strip() for address in str(message["To"]).split(",")]


# -- the shipped examples -----------------------------------------------------------------------------------


def expected_day(export: list[dict[str, Any]], day: dt.date) -> list[dict[str, Any]]:
    """The export's rows of `day` as the template should land them, computed from the generator's rows."""
    out = []
    for row in export:
        if row["usage_start_time"].astimezone(dt.UTC).date() != day:
            continue
        credits = sum((Decimal(str(c["amount"])) for c in row.get("credits") or ()), Decimal(0))
        out.append({
            "service_description": row["service"]["description"], "sku_id": row["sku"]["id"],
            "project_id": row["project"]["id"], "usage_start_time": row["usage_start_time"],
            "cost": Decimal(str(row["cost"])), "credits_total": credits,
            "net_cost": Decimal(str(row["cost"])) + credits, "currency": row["currency"],
            "usage_unit": row["usage"]["unit"], "invoice_month": row["invoice"]["month"],
        })  # fmt: skip
    return out


def landed(rt: Runtime, tenant: str) -> list[dict[str, Any]]:
    """gcp_billing_export_daily's rows in the shape of `expected_day` (floats read back as written)."""
    out = []
    for row in rows(rt, tenant, "gcp_billing_export_daily"):
        out.append({
            "service_description": row["service_description"], "sku_id": row["sku_id"],
            "project_id": row["project_id"], "usage_start_time": row["usage_start_time"].astimezone(dt.UTC),
            "cost": Decimal(repr(row["cost"])), "credits_total": Decimal(repr(row["credits_total"])),
            "net_cost": Decimal(repr(row["net_cost"])), "currency": row["currency"],
            "usage_unit": row["usage_unit"], "invoice_month": row["invoice_month"],
        })  # fmt: skip
    return out


def as_multiset(items: list[dict[str, Any]]) -> Counter:
    return Counter(
        tuple(sorted((k, round(v, 6) if isinstance(v, Decimal) else v) for k, v in item.items()))
        for item in items
    )


def test_bill_sample_export_template_lands_the_days_export_rows_of_the_tenant_only(
    runtime, trigger_client, tenants
) -> None:
    acme_export, globex_export = load_export(runtime, "acme", seed=7), load_export(runtime, "globex", seed=8)

    view = run(runtime, trigger_client, tenants, "acme", BILL_SAMPLE, date=DAY.isoformat())

    assert view["status"] == "COMPLETE", view
    assert steps_of(view) == {"extract_billing": "COMPLETE", "notify_on_failure": "SKIPPED"}
    assert view["pipeline_id"] == "acme-gcp-cost-bill-sample-export-template"
    expected = expected_day(acme_export, DAY)
    assert len(expected) == 43 and view["steps"][0]["rows_processed"] == len(expected)
    assert as_multiset(landed(runtime, "acme")) == as_multiset(expected)
    daily = rows(runtime, "acme", "gcp_billing_export_daily")
    assert {r["usage_date"] for r in daily} == {DAY}
    total = sum((e["net_cost"] for e in expected), Decimal(0))
    assert abs(sum(Decimal(repr(r["net_cost"])) for r in daily) - total) < Decimal("0.00001")
    assert any(e["credits_total"] < 0 for e in expected), "the day has credits to sum"
    # dataset_type said gcp_silver_cost: the rows went to the tenant's own dataset, nowhere else
    assert "gcp_billing_export_daily" not in runtime.warehouse.list_tables("globex")
    assert {r["project_id"] for r in daily} <= {r["project"]["id"] for r in acme_export}
    assert not {r["project_id"] for r in daily} & {r["project"]["id"] for r in globex_export}


def test_bill_sample_export_write_truncate_replaces_the_table_with_the_day_asked_for(
    runtime, trigger_client, tenants
) -> None:
    export = load_export(runtime, "acme", seed=7)
    run(runtime, trigger_client, tenants, "acme", BILL_SAMPLE, date=DAY.isoformat())

    again = run(runtime, trigger_client, tenants, "acme", BILL_SAMPLE, date=DAY.isoformat())
    assert again["status"] == "COMPLETE"
    assert as_multiset(landed(runtime, "acme")) == as_multiset(expected_day(export, DAY))

    next_day = run(runtime, trigger_client, tenants, "acme", BILL_SAMPLE, date=NEXT_DAY.isoformat())
    assert next_day["status"] == "COMPLETE"
    assert as_multiset(landed(runtime, "acme")) == as_multiset(expected_day(export, NEXT_DAY))


def test_onboarding_example_appends_its_check_and_mails_the_organisations_admin(
    runtime, trigger_client, tenants
) -> None:
    first = run(runtime, trigger_client, tenants, "acme", ONBOARDING, trigger_by="first")
    second = run(runtime, trigger_client, tenants, "acme", ONBOARDING, trigger_by="second")

    for view in (first, second):
        assert view["status"] == "COMPLETE", view
        assert steps_of(view) == {
            "onboarding_check": "COMPLETE", "welcome_email": "COMPLETE", "failure_email": "SKIPPED",
        }  # fmt: skip
    checks = rows(runtime, "acme", "onboarding_checks")
    today = dt.datetime.now(dt.UTC).date()
    assert sorted(r["pipeline_logging_id"] for r in checks) == sorted(
        v["pipeline_logging_id"] for v in (first, second)
    )  # WRITE_APPEND: one row per run
    assert {(r["tenant_id"], r["run_date"], r["message"]) for r in checks} == {
        ("acme", today, "Onboarding check passed")
    }
    mail = read_mail(runtime, "acme", first["pipeline_logging_id"], "welcome_email")
    assert recipients(mail) == ["admin@acme.example.com"]  # no to_emails: the organisation's admin
    assert mail["Subject"] == "Welcome to Convergence, acme"
    body = mail.get_content()
    assert f"Your organisation acme is set up: run {first['pipeline_logging_id']}" in body
    assert "onboarding_checks" not in runtime.warehouse.list_tables("globex")


def test_the_listing_shows_the_described_examples_with_their_warnings(
    runtime, trigger_client, tenants
) -> None:
    listed = assert_json(trigger_client.get("/api/v1/pipelines/templates", headers=tenants["acme"]), 200)
    by_name = {f"{t['provider']}/{t['domain']}/{t['template']}": t for t in listed["templates"]}

    bill = by_name[BILL_SAMPLE]
    assert bill["name"] == "GCP billing export sample"
    assert bill["description"].startswith("The described system's bill-sample-export-template")
    assert any("destination.dataset_type" in w and "gcp_silver_cost" in w for w in bill["warnings"]), bill
    assert all(w.startswith("step extract_billing: ") for w in bill["warnings"])
    onboarding = by_name[ONBOARDING]
    assert onboarding["name"] == "Onboarding example"
    assert any("destination.dataset_type" in w for w in onboarding["warnings"])
    assert set(onboarding["variables"]) >= {"date", "trigger_by", "check_message", "welcome_subject"}
    typed = by_name["gcp/cost/cost_billing"]
    assert typed["warnings"] == [] and typed["name"] is None


# -- planted templates ---------------------------------------------------------------------------------------


@pytest.fixture
def plant(
    tenants: dict[str, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Write configs/gcp/cost/{name}.yml (a whole template) in a folder the loader reads from now on."""
    configs = tmp_path / "configs"
    monkeypatch.setattr(loader, "CONFIGS_DIR", configs)
    loader.load_template.cache_clear()

    def write(template: dict[str, Any], name: str = "planted") -> str:
        path = configs / "gcp" / "cost" / f"{name}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(template, sort_keys=False))
        loader.load_template.cache_clear()
        return f"gcp/cost/{name}"

    yield write
    loader.load_template.cache_clear()


def check_step(query: str, write_mode: str = "WRITE_APPEND") -> dict[str, Any]:
    return {
        "step_id": "record", "name": "Record", "ps_type": "gcp.bigquery_to_bigquery", "source": {"query": query},
        "destination": {"dataset_type": "{tenant_id}", "table": "onboarding_checks", "write_mode": write_mode},
    }  # fmt: skip


LABEL_QUERY = (
    "SELECT '{tenant_id}' AS tenant_id, '{run_date}' AS run_date, '[{label}] {date}' AS message,"
    ' "{label}" AS pipeline_logging_id, CURRENT_TIMESTAMP() AS checked_at'
)


@pytest.mark.parametrize(
    "value", HOSTILE, ids=["single_quote_delete", "double_quote_drop", "braces_backslash"]
)
def test_a_quoted_placeholder_is_a_parameter_so_a_hostile_value_is_only_data(
    runtime, trigger_client, tenants, plant, value
) -> None:
    template = plant({
        "pipeline_name": "label probe",
        "variables": {"label": {"type": "string", "default": "plain", "overridable": True}},
        "steps": [check_step(LABEL_QUERY)],
    })  # fmt: skip
    before = len(rows(runtime, "acme", "pipeline_runs"))

    view = run(runtime, trigger_client, tenants, "acme", template, date=DAY.isoformat(), label=value)

    assert view["status"] == "COMPLETE", view
    (row,) = rows(runtime, "acme", "onboarding_checks")
    assert row["pipeline_logging_id"] == value  # the whole literal "{label}" is @label
    assert row["message"] == f"[{value}] {DAY.isoformat()}"  # a longer literal is CONCAT('[', @label, ...)
    assert len(rows(runtime, "acme", "pipeline_runs")) > before  # nothing was deleted or dropped


def test_the_translated_sql_holds_parameters_not_values(runtime, tenants, plant) -> None:
    plant(
        {"pipeline_name": "label probe", "variables": {"label": "it's"}, "steps": [check_step(LABEL_QUERY)]}
    )

    sql = loader.load_template("gcp", "cost", "planted").steps[0].config["sql"]

    assert "@label AS pipeline_logging_id" in sql and "CONCAT('[', CAST(@label AS STRING), '] '" in sql
    assert "it's" not in sql and "'{" not in sql and '"{' not in sql


def test_a_quoted_placeholder_of_an_undeclared_variable_is_400_before_any_run(
    runtime, trigger_client, tenants, plant
) -> None:
    query = "SELECT * FROM `{org_slug}.gcp_billing_export_v1` WHERE DATE(usage_start_time) >= '{start_date}'"
    template = plant({"pipeline_name": "undeclared", "steps": [check_step(query)]})
    before = len(rows(runtime, "acme", "pipeline_runs"))

    response = trigger_client.post(f"/api/v1/pipelines/run/acme/{template}", headers=tenants["acme"], json={})

    body = assert_error(response, 400, "invalid_template")
    assert body["template"] == template
    (problem,) = body["problems"]
    assert (problem["step_id"], problem["field"]) == ("record", "source.query")
    assert "unknown placeholder '{start_date}'" in problem["message"]
    assert body["message"].startswith(f"{template} step record: source.query: unknown placeholder")
    assert len(rows(runtime, "acme", "pipeline_runs")) == before


def test_a_query_naming_another_dataset_is_400_and_each_tenant_reads_its_own(
    runtime, trigger_client, tenants, plant
) -> None:
    for tenant, seed in (("acme", 7), ("globex", 8)):
        load_export(runtime, tenant, seed)
    own = plant({"pipeline_name": "own", "steps": [check_step(
        "SELECT '{tenant_id}' AS tenant_id, '{run_date}' AS run_date, MIN(project.id) AS message,"
        " '{run_id}' AS pipeline_logging_id, CURRENT_TIMESTAMP() AS checked_at"
        " FROM {project_id}.{dataset_id}.gcp_billing_export_v1")]}, name="own")  # fmt: skip
    other = plant({"pipeline_name": "other", "steps": [check_step(
        "SELECT tenant_id, run_date, message, pipeline_logging_id, checked_at FROM globex.onboarding_checks"
    )]}, name="other")  # fmt: skip

    body = assert_error(
        trigger_client.post(f"/api/v1/pipelines/run/acme/{other}", headers=tenants["acme"], json={}), 400
    )
    assert "reads globex.onboarding_checks of dataset globex" in body["problems"][0]["message"]
    for tenant in ("acme", "globex"):
        view = run(runtime, trigger_client, tenants, tenant, own, date=DAY.isoformat())
        assert view["status"] == "COMPLETE", view
        (row,) = rows(runtime, tenant, "onboarding_checks")
        assert row["message"].startswith(f"{tenant}-") and row["tenant_id"] == tenant


def test_email_steps_map_to_emails_and_message_under_both_described_names(
    runtime, trigger_client, tenants, plant
) -> None:
    probe = (
        "SELECT '{tenant_id}' AS tenant_id, '{run_date}' AS run_date, 'ok' AS message,"
        " '{run_id}' AS pipeline_logging_id, CURRENT_TIMESTAMP() AS checked_at"
    )
    template = plant({
        "pipeline_name": "mail probe",
        "variables": {"team": "finops@acme.example.com"},
        "steps": [
            check_step(probe),
            {"step_id": "as_list", "ps_type": "notify_systems.email_notification", "trigger": "on_success",
             "to_emails": ["{team}", "cfo@acme.example.com"], "subject": "Costs for {date}",
             "message": "The costs of {date} are in, {tenant_id}."},
            {"step_id": "as_text", "ps_type": "shared.email_notification", "trigger": "on_completion",
             "to_emails": "ops@acme.example.com", "subject_template": "Run {run_id}",
             "body_template": "Finished."},
        ],
    })  # fmt: skip

    view = run(runtime, trigger_client, tenants, "acme", template, date=DAY.isoformat())

    assert view["status"] == "COMPLETE", view
    assert [s["ps_type"] for s in view["steps"]] == [
        "gcp.bigquery_to_bigquery", "notify_systems.email_notification", "shared.email_notification",
    ]  # fmt: skip
    run_id = view["pipeline_logging_id"]
    listed = read_mail(runtime, "acme", run_id, "as_list")
    assert recipients(listed) == ["finops@acme.example.com", "cfo@acme.example.com"]
    assert listed["Subject"] == f"Costs for {DAY.isoformat()}"
    assert listed.get_content().startswith(f"The costs of {DAY.isoformat()} are in, acme.")
    text = read_mail(runtime, "acme", run_id, "as_text")
    assert recipients(text) == ["ops@acme.example.com"] and text["Subject"] == f"Run {run_id}"
    assert text.get_content().startswith("Finished.")


def test_a_bad_address_in_to_emails_is_400_naming_the_field_as_written(
    runtime, trigger_client, tenants, plant
) -> None:
    template = plant({"pipeline_name": "bad mail", "steps": [
        {"step_id": "mail", "ps_type": "shared.email_notification", "to_emails": ["not-an-address"],
         "message": "hello"},
    ]})  # fmt: skip

    response = trigger_client.post(f"/api/v1/pipelines/run/acme/{template}", headers=tenants["acme"], json={})

    body = assert_error(response, 400, "invalid_template")
    assert [(p["step_id"], p["field"]) for p in body["problems"]] == [("mail", "to_emails")]
    assert "not an email address: not-an-address" in body["problems"][0]["message"]
