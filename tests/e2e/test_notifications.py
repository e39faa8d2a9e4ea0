"""Mail reaches the tenant: its admin_email and the recipients it sets, at onboarding and when runs fail.

Without an SMTP server every mail is a .eml file in `CONVERGENCE_HOME/outbox/{tenant}`: a template step's at
the top (`{run}-{step}.eml`), the platform's own notices in `notices/` (the welcome, a failed scheduled run).
The SMTP path is proven in test_notify_smtp.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.metadata import notification_deliveries, notification_settings
from common.metadata.control_dataset import is_bootstrapped
from common.runtime import Runtime
from common.warehouse.bigquery import BigQueryWarehouse
from common.warehouse.sql import table_ref
from common.wiring import build_local_bus, set_runtime
from tests.conftest import function_client, wait_for_bus
from tests.e2e.cost_support import platform_runtime
from tests.e2e.mail_support import (
    ADMIN,
    FAILING,
    claims,
    drop_notify_steps,
    notices,
    read_mail,
    recipients_of,
    run_schedule,
    step_mails,
)
from tests.e2e.support import assert_error, assert_json

COST_BILLING = "/api/v1/pipelines/run/acme/gcp/cost/cost_billing"
SETTINGS = "/api/v1/organizations/{org}/notifications"


# -- helpers -------------------------------------------------------------------------------------------


def outbox(rt: Runtime, tenant: str) -> Path:
    return rt.settings.outbox_dir / tenant


def start_failing_run(client: Any, key: str, **body: Any) -> str:
    accepted = client.post(COST_BILLING, headers={"X-API-Key": key}, json=FAILING | body)
    assert accepted.status_code == 202, accepted.json
    return accepted.json["pipeline_logging_id"]


def get_run(client: Any, key: str, run_id: str) -> dict[str, Any]:
    return assert_json(client.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": key}), 200)


def put_settings(client: Any, headers: dict[str, str], org: str = "acme", **body: Any) -> dict[str, Any]:
    return assert_json(client.put(SETTINGS.format(org=org), headers=headers, json=body), 200)


@pytest.fixture
def acme(onboard_org: Callable[[str], str], runtime: Runtime) -> str:
    key = onboard_org("acme")
    wait_for_bus(runtime)
    return key


@pytest.fixture
def twice(runtime: Runtime) -> Runtime:
    """Every message is delivered twice, as Pub/Sub may."""
    old, runtime.bus = runtime.bus, build_local_bus(runtime.settings, duplicate_deliveries=2)
    old.close()
    return runtime


@pytest.fixture
def without_notify_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """cost_billing as if its template had no notify.email step."""
    drop_notify_steps(monkeypatch)


# -- notify.email defaults to the organisation's recipients -------------------------------------------------


def test_a_failed_run_without_notify_to_mails_the_admin_email(runtime, trigger_client, acme):
    run_id = start_failing_run(trigger_client, acme)
    wait_for_bus(runtime)

    run = get_run(trigger_client, acme, run_id)
    assert run["status"] == "FAILED"
    assert run["steps"][-1]["step_id"] == "notify_failure" and run["steps"][-1]["status"] == "COMPLETE"
    assert [p.name for p in step_mails(runtime, "acme")] == [f"{run_id}-notify_failure.eml"]
    mail = read_mail(step_mails(runtime, "acme")[0])
    assert recipients_of(mail) == [ADMIN]
    assert run_id in mail.get_content() and "failed" in mail.get_content()
    assert not any(run_id in p.name for p in notices(runtime, "acme"))  # an API run: no notice of its own


def test_recipients_set_through_the_route_receive_failure_mail(runtime, trigger_client, onboard_client, acme):
    key = {"X-API-Key": acme}
    put_settings(onboard_client, key, emails=["finops@acme.example.com", "CFO@acme.example.com"])
    first = start_failing_run(trigger_client, acme)
    wait_for_bus(runtime)
    assert recipients_of(read_mail(outbox(runtime, "acme") / f"{first}-notify_failure.eml")) == [
        ADMIN, "finops@acme.example.com", "CFO@acme.example.com",
    ]  # fmt: skip

    put_settings(onboard_client, key, emails=["finops@acme.example.com"], include_admin_email=False)
    second = start_failing_run(trigger_client, acme)
    wait_for_bus(runtime)
    assert recipients_of(read_mail(outbox(runtime, "acme") / f"{second}-notify_failure.eml")) == [
        "finops@acme.example.com"
    ]


def test_a_tenant_that_mutes_failures_gets_no_failure_mail(runtime, trigger_client, onboard_client, acme):
    put_settings(onboard_client, {"X-API-Key": acme}, emails=[], on_failure=False)
    run_id = start_failing_run(trigger_client, acme)
    wait_for_bus(runtime)

    run = get_run(trigger_client, acme, run_id)
    assert run["status"] == "FAILED" and run["steps"][-1]["status"] == "COMPLETE"
    assert run["steps"][-1]["rows_processed"] == 0
    assert step_mails(runtime, "acme") == []


def test_notify_to_still_overrides_the_recipients(runtime, trigger_client, onboard_client, acme):
    put_settings(onboard_client, {"X-API-Key": acme}, emails=["finops@acme.example.com"])
    run_id = start_failing_run(trigger_client, acme, notify_to="cfo@acme.example.com, ops@acme.example.com")
    wait_for_bus(runtime)

    mail = read_mail(outbox(runtime, "acme") / f"{run_id}-notify_failure.eml")
    assert recipients_of(mail) == ["cfo@acme.example.com", "ops@acme.example.com"]


@pytest.mark.parametrize(
    "notify_to", ["not-an-email", "a@b.com; c@d.com", "a@b.com'; DROP TABLE org_profiles; --"]
)
def test_a_bad_notify_to_is_still_refused(trigger_client, acme, notify_to):
    response = trigger_client.post(
        COST_BILLING, headers={"X-API-Key": acme}, json=FAILING | {"notify_to": notify_to}
    )
    assert "notify_to" in assert_error(response, 400)["message"]


# -- the welcome at onboarding ------------------------------------------------------------------------------


def test_onboarding_writes_a_welcome_naming_the_dataset_and_how_to_start_without_the_key(
    runtime, onboard_client, root_headers
):
    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    body = {"org_slug": "acme", "company_name": "Acme Corp", "admin_email": ADMIN}
    created = assert_json(
        onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201
    )

    assert created["welcome_email"] == "outbox"
    assert [p.name for p in notices(runtime, "acme")] == ["welcome.eml"]
    mail = read_mail(notices(runtime, "acme")[0])
    text = mail.get_content()
    assert recipients_of(mail) == [ADMIN] and "Acme Corp" in str(mail["Subject"])
    assert "the dataset acme of project local-project" in text
    for route in ("/api/v1/integrations/acme/", "/api/v1/data/acme/uploads/", "/api/v1/pipelines/run/acme/",
                  "/api/v1/organizations/acme/notifications"):  # fmt: skip
        assert route in text, route
    raw = notices(runtime, "acme")[0].read_bytes().decode()
    secret = created["api_key"].split("_api_", 1)[1]
    assert created["api_key"] not in raw and secret not in raw and secret[:12] not in raw


def test_a_second_onboarding_is_409_and_sends_no_second_welcome(runtime, onboard_client, root_headers, acme):
    welcome = notices(runtime, "acme")[0]
    before = welcome.stat().st_mtime_ns
    body = {"org_slug": "acme", "company_name": "Acme", "admin_email": "other@acme.example.com"}
    assert_error(onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 409)

    assert welcome.stat().st_mtime_ns == before and ADMIN in str(read_mail(welcome)["To"])
    assert claims(runtime, "welcome:acme") == 1


def test_the_older_onboarding_route_without_an_address_sends_no_welcome(
    runtime, onboard_client, root_headers
):
    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    created = onboard_client.post(
        "/api/v1/customers/onboard", headers=root_headers, json={"tenant_id": "globex"}
    )
    assert assert_json(created, 201)["welcome_email"] == "skipped"
    assert notices(runtime, "globex") == []


def test_a_welcome_that_cannot_be_written_does_not_fail_onboarding(
    runtime, onboard_client, trigger_client, root_headers, monkeypatch
):
    from common import mail

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    monkeypatch.setattr(mail, "send", broken)
    body = {"org_slug": "acme", "company_name": "Acme", "admin_email": ADMIN}
    created = assert_json(
        onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201
    )

    assert created["welcome_email"] == "failed" and created["dryrun_status"] == "COMPLETE"
    assert claims(runtime, "welcome:acme") == 0  # given back: a later attempt may send it
    templates = trigger_client.get("/api/v1/pipelines/templates", headers={"X-API-Key": created["api_key"]})
    assert_json(templates, 200)


# -- failed scheduled and bulk runs mail the organisation --------------------------------------------------


@pytest.mark.parametrize("trigger_type", ["schedule", "bulk"])
def test_a_failed_unattended_run_without_a_notify_step_mails_the_admin_once(
    without_notify_step, twice, onboard_client, acme, trigger_type
):
    put_settings(onboard_client, {"X-API-Key": acme}, emails=["finops@acme.example.com"])
    run_id = run_schedule(twice, trigger_type)

    assert step_mails(twice, "acme") == []
    assert [p.name for p in notices(twice, "acme")] == [f"{run_id}-run_failed.eml", "welcome.eml"]
    mail = read_mail(notices(twice, "acme")[0])
    assert recipients_of(mail) == [ADMIN, "finops@acme.example.com"]
    assert f"{trigger_type} run" in str(mail["Subject"]) and "gcp/cost/cost_billing" in str(mail["Subject"])
    text = mail.get_content()
    assert run_id in text and f"GET /api/v1/pipelines/runs/{run_id}" in text and "2024-05-01" in text
    assert claims(twice, f"run_failed:acme:{run_id}") == 1


def test_a_failed_scheduled_run_whose_own_step_mailed_the_admin_is_not_mailed_again(twice, acme):
    run_id = run_schedule(twice)

    assert [p.name for p in step_mails(twice, "acme")] == [f"{run_id}-notify_failure.eml"]
    assert recipients_of(read_mail(step_mails(twice, "acme")[0])) == [ADMIN]
    assert [p.name for p in notices(twice, "acme")] == ["welcome.eml"]


def test_recipients_a_scheduled_runs_own_step_did_not_mail_still_hear_of_the_failure(runtime, acme):
    run_id = run_schedule(runtime, notify_to="cfo@acme.example.com")

    assert recipients_of(read_mail(outbox(runtime, "acme") / f"{run_id}-notify_failure.eml")) == [
        "cfo@acme.example.com"
    ]
    assert recipients_of(read_mail(outbox(runtime, "acme") / "notices" / f"{run_id}-run_failed.eml")) == [
        ADMIN
    ]


def test_a_failed_scheduled_run_of_a_tenant_that_mutes_failures_mails_nobody(
    without_notify_step, runtime, onboard_client, acme
):
    put_settings(onboard_client, {"X-API-Key": acme}, emails=["finops@acme.example.com"], on_failure=False)
    run_schedule(runtime)
    assert step_mails(runtime, "acme") == [] and [p.name for p in notices(runtime, "acme")] == ["welcome.eml"]


# -- the settings route -------------------------------------------------------------------------------------


def test_settings_start_as_the_admin_email_alone(onboard_client, acme):
    view = assert_json(onboard_client.get(SETTINGS.format(org="acme"), headers={"X-API-Key": acme}), 200)
    assert view == {
        "org_slug": "acme", "admin_email": ADMIN, "include_admin_email": True, "emails": [], "on_failure": True,
        "recipients": [ADMIN], "updated_at": None,
    }  # fmt: skip


def test_settings_are_stored_and_fields_left_out_keep_their_value(runtime, onboard_client, acme):
    key = {"X-API-Key": acme}
    put_settings(
        onboard_client, key, emails=["a@acme.example.com"], on_failure=False, include_admin_email=False
    )
    view = put_settings(
        onboard_client, key, emails=["b@acme.example.com", "B@acme.example.com", ADMIN.upper()]
    )

    assert view["emails"] == ["b@acme.example.com", ADMIN.upper()]
    assert view["on_failure"] is False and view["include_admin_email"] is False
    assert view["recipients"] == ["b@acme.example.com", ADMIN.upper()]
    assert view["updated_at"].endswith("Z")
    assert assert_json(onboard_client.get(SETTINGS.format(org="acme"), headers=key), 200) == view

    with_admin = put_settings(
        onboard_client, key, emails=["b@acme.example.com", ADMIN.upper()], include_admin_email=True
    )
    assert with_admin["recipients"] == [ADMIN, "b@acme.example.com"]  # each address once


def test_setting_what_is_already_set_writes_nothing(runtime, onboard_client, acme):
    key = {"X-API-Key": acme}
    table = table_ref(runtime.settings.control_dataset, "org_notification_settings")
    first = put_settings(onboard_client, key, emails=["a@acme.example.com"])
    again = put_settings(onboard_client, key, emails=["a@acme.example.com"], on_failure=True)
    assert again == first
    assert runtime.warehouse.query(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"] == 1


def test_the_root_key_may_read_and_set_any_organisations_settings(onboard_client, root_headers, acme):
    view = put_settings(onboard_client, root_headers, emails=["ops@acme.example.com"])
    assert view["recipients"] == [ADMIN, "ops@acme.example.com"]
    missing = onboard_client.get(SETTINGS.format(org="nobody"), headers=root_headers)
    assert_error(missing, 404, "org_not_found")


@pytest.mark.parametrize(
    "body,field",
    [
        ({"emails": ["not-an-address"]}, "emails.0"),
        ({"emails": ["a@b.com'; DROP TABLE org_profiles; --"]}, "emails.0"),
        ({"emails": ["x@acme.example.com, y@acme.example.com"]}, "emails.0"),
        ({"emails": [f"r{i}@acme.example.com" for i in range(21)]}, "emails"),
        ({"emails": "finops@acme.example.com"}, "emails"),
        ({"on_failure": False}, "emails"),
        ({"emails": [], "on_failure": "sometimes"}, "on_failure"),
        ({"emails": [], "cc": ["x@acme.example.com"]}, "cc"),
    ],
)
def test_a_bad_settings_body_is_422_naming_the_field_and_changes_nothing(onboard_client, acme, body, field):
    key = {"X-API-Key": acme}
    before = assert_json(onboard_client.get(SETTINGS.format(org="acme"), headers=key), 200)
    refused = assert_error(onboard_client.put(SETTINGS.format(org="acme"), headers=key, json=body), 422)
    assert field in [e["field"] for e in refused["errors"]], refused
    assert assert_json(onboard_client.get(SETTINGS.format(org="acme"), headers=key), 200) == before


@pytest.mark.parametrize("data", ["{", "[]", "null"])
def test_a_settings_body_that_is_not_a_json_object_is_400(onboard_client, acme, data):
    response = onboard_client.put(
        SETTINGS.format(org="acme"), headers={"X-API-Key": acme}, data=data, content_type="application/json"
    )
    assert_error(response, 400)


@pytest.mark.parametrize("method", ["get", "put"])
def test_settings_of_another_organisation_are_403_and_stay_as_they_were(
    onboard_client, onboard_org, acme, method
):
    globex = {"X-API-Key": onboard_org("globex")}
    put_settings(onboard_client, {"X-API-Key": acme}, emails=["finops@acme.example.com"])
    response = getattr(onboard_client, method)(
        SETTINGS.format(org="acme"), headers=globex, json={"emails": []}
    )
    assert_error(response, 403, "wrong_organization")
    view = assert_json(onboard_client.get(SETTINGS.format(org="acme"), headers={"X-API-Key": acme}), 200)
    assert view["emails"] == ["finops@acme.example.com"]
    assert assert_json(onboard_client.get(SETTINGS.format(org="globex"), headers=globex), 200)["emails"] == []


@pytest.mark.parametrize("method", ["get", "put"])
def test_settings_need_a_key(onboard_client, acme, method):
    response = getattr(onboard_client, method)(SETTINGS.format(org="acme"), json={"emails": []})
    assert_error(response, 401)


# -- a platform bootstrapped before these tables existed ------------------------------------------------


def test_bootstrapping_again_adds_the_notification_tables_and_keeps_the_organisations(
    runtime, onboard_client, root_headers, acme
):
    control = runtime.settings.control_dataset
    for table in ("org_notification_settings", "notification_deliveries"):
        runtime.warehouse.execute(f"DROP TABLE {table_ref(control, table)}")
    assert not is_bootstrapped(runtime)
    view = assert_json(onboard_client.get(SETTINGS.format(org="acme"), headers={"X-API-Key": acme}), 200)
    assert view["recipients"] == [ADMIN]  # the defaults, until bootstrap creates the table

    again = assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    assert sorted(again["tables_created"]) == ["notification_deliveries", "org_notification_settings"]
    assert is_bootstrapped(runtime)
    assert put_settings(onboard_client, {"X-API-Key": acme}, emails=["a@acme.example.com"])["emails"] == [
        "a@acme.example.com"
    ]


# -- the same SQL on the BigQuery adapter -----------------------------------------------------------------


def test_settings_and_notice_claims_work_on_the_bigquery_adapter(tmp_path, bigquery_emulator, root_headers):
    env = {
        "CONVERGENCE_WAREHOUSE": "bigquery",
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
        "GCP_PROJECT_ID": f"notify-{uuid.uuid4().hex[:10]}",
    }
    rt = platform_runtime(tmp_path / "home", env)
    assert isinstance(rt.warehouse, BigQueryWarehouse)
    set_runtime(rt)
    onboard = function_client("onboard", "onboard")
    assert_json(onboard.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    body = {"org_slug": "acme", "company_name": "Acme", "admin_email": ADMIN}
    created = assert_json(onboard.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201)
    key = {"X-API-Key": created["api_key"]}

    assert created["welcome_email"] == "outbox" and claims(rt, "welcome:acme") == 1
    assert assert_json(onboard.get(SETTINGS.format(org="acme"), headers=key), 200)["recipients"] == [ADMIN]
    put_settings(onboard, key, emails=[], include_admin_email=False)
    view = put_settings(onboard, key, emails=["finops@acme.example.com"])
    assert view["recipients"] == ["finops@acme.example.com"] and view["include_admin_email"] is False
    assert notification_settings.recipients(rt, "acme", failure=True) == ["finops@acme.example.com"]

    assert notification_deliveries.claim(rt, "run_failed:acme:r1", "acme", [ADMIN]) is True
    assert notification_deliveries.claim(rt, "run_failed:acme:r1", "acme", [ADMIN]) is False
    notification_deliveries.release(rt, "run_failed:acme:r1")
    assert notification_deliveries.claim(rt, "run_failed:acme:r1", "acme", [ADMIN]) is True
