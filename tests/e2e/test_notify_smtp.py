"""Mail goes through a real SMTP server when one is configured: template steps, welcomes and failure notices."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.bus.messages import StepMessage
from common.errors import TransientError
from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.services import execution
from common.wiring import build_local_bus
from convergence.demo.gcp_billing import generate_billing_export
from tests.conftest import wait_for_bus
from tests.e2e.mail_support import (
    ADMIN,
    SENDER,
    Inbox,
    claims,
    drop_notify_steps,
    free_port,
    notices,
    recipients_of,
    run_schedule,
    smtp_server,
    use_smtp,
)
from tests.e2e.support import assert_json


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """An SMTP server the platform sends to (list it before the fixtures that build the runtime)."""
    with smtp_server() as (controller, received):
        use_smtp(monkeypatch, controller.port)
        yield received


@pytest.fixture
def acme(inbox: Inbox, onboard_org: Callable[[str], str], runtime: Runtime) -> str:
    key = onboard_org("acme")
    wait_for_bus(runtime)
    return key


def test_a_failed_run_emails_the_chosen_address_over_smtp(inbox, runtime, trigger_client, acme):
    rows = generate_billing_export("acme", dt.date(2024, 5, 1), 1)
    runtime.warehouse.create_table("acme", load_schema("tenant", "gcp_billing_export_v1"))
    runtime.warehouse.insert_rows("acme", "gcp_billing_export_v1", rows)
    body = {"date": "2024-05-01", "min_rows": 1000, "notify_to": "finops@acme.example.com"}
    accepted = trigger_client.post("/api/v1/pipelines/run/acme/gcp/cost/cost_billing",
                                   headers={"X-API-Key": acme}, json=body)  # fmt: skip
    assert accepted.status_code == 202, accepted.json
    run_id = accepted.json["pipeline_logging_id"]
    wait_for_bus(runtime)
    run = assert_json(
        trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": acme}), 200
    )
    assert run["status"] == "FAILED"
    assert "min_rows" in run["error_message"]

    inbox.wait_for(2)  # the welcome, then the failure
    [mail] = inbox.about("X-Convergence-Run", run_id)
    assert mail["To"] == "finops@acme.example.com"
    assert mail["From"] == SENDER
    assert "2024-05-01" in mail["Subject"] and "acme" in mail["Subject"]
    assert run_id in mail.get_payload()
    assert not list((runtime.settings.outbox_dir / "acme").glob("**/*.eml"))


def test_onboarding_welcomes_the_admin_over_smtp_without_the_key(
    inbox, onboard_client, root_headers, runtime
):
    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    body = {"org_slug": "acme", "company_name": "Acme Corp", "admin_email": ADMIN}
    created = assert_json(
        onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201
    )

    assert created["welcome_email"] == "sent"
    [welcome] = inbox.wait_for(1)
    assert recipients_of(welcome) == [ADMIN] and welcome["From"] == SENDER
    assert welcome["Message-ID"] == "<welcome.acme@platform.example.com>"
    text = welcome.get_payload()
    assert "dataset" in text and "acme" in text and "/api/v1/pipelines/run/acme/" in text
    assert created["api_key"] not in text and created["api_key"].split("_api_", 1)[1][:12] not in text
    assert notices(runtime, "acme") == []

    again = onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body)
    assert again.status_code == 409
    assert len(inbox.wait_for(2, timeout=1)) == 1


@pytest.fixture
def smtp_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """SMTP_HOST names a server that does not answer (list it before the fixtures that build the runtime)."""
    use_smtp(monkeypatch, free_port())


def test_onboarding_succeeds_when_the_smtp_server_is_down(
    smtp_down, runtime, onboard_client, trigger_client, root_headers
):
    assert_json(onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}), 200)
    body = {"org_slug": "acme", "company_name": "Acme", "admin_email": ADMIN}
    created = assert_json(
        onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body), 201
    )

    assert created["welcome_email"] == "failed" and created["dryrun_status"] == "COMPLETE"
    assert claims(runtime, "welcome:acme") == 0  # given back: a later attempt may send it
    assert_json(
        trigger_client.get("/api/v1/pipelines/templates", headers={"X-API-Key": created["api_key"]}), 200
    )


@pytest.fixture
def twice(runtime: Runtime) -> Runtime:
    """Every message is delivered twice, as Pub/Sub may."""
    old, runtime.bus = runtime.bus, build_local_bus(runtime.settings, duplicate_deliveries=2)
    old.close()
    return runtime


def test_a_failed_scheduled_run_delivered_twice_mails_the_admin_once(inbox, twice, acme, monkeypatch):
    drop_notify_steps(monkeypatch)
    deliveries: Counter[int] = Counter()
    original = execution.execute_step

    def counting(rt: Runtime, message: StepMessage, attempt: int = 1) -> Any:
        deliveries[message.step_index] += 1
        return original(rt, message, attempt)

    monkeypatch.setattr(execution, "execute_step", counting)
    run_id = run_schedule(twice)

    assert deliveries and all(count >= 2 for count in deliveries.values()), deliveries
    inbox.wait_for(3, timeout=2)
    [notice] = inbox.about("X-Convergence-Run", run_id)
    assert recipients_of(notice) == [ADMIN] and "failed" in notice["Subject"]
    assert claims(twice, f"run_failed:acme:{run_id}") == 1


def test_a_notice_sent_just_before_a_crash_is_not_sent_again_on_redelivery(inbox, runtime, acme, monkeypatch):
    """The run's FAILED record cannot be written once; the step is redelivered and closes the run."""
    drop_notify_steps(monkeypatch)
    original = execution.runs.append_run_status
    crashes = []

    def crash_once(wh: Any, tenant: str, latest: Any, status: str, **kwargs: Any) -> Any:
        if status == "FAILED" and not crashes:
            crashes.append(latest.pipeline_logging_id)
            raise TransientError("the warehouse went away")
        return original(wh, tenant, latest, status, **kwargs)

    monkeypatch.setattr(execution.runs, "append_run_status", crash_once)
    run_id = run_schedule(runtime)

    assert crashes == [run_id]
    inbox.wait_for(3, timeout=2)
    assert len(inbox.about("X-Convergence-Run", run_id)) == 1
