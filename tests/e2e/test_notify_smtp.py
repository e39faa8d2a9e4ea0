"""notify.email sends through a real SMTP server when one is configured."""

from __future__ import annotations

import socket
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message

from common.settings import get_settings, reset_settings
from common.wiring import build_runtime, set_runtime
from tests.conftest import wait_for_bus


class Inbox(Message):
    def __init__(self):
        super().__init__()
        self.messages = []

    def handle_message(self, message):
        self.messages.append(message)


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def test_a_failed_run_emails_the_admin_over_smtp(monkeypatch, smtp_server, onboard_org):
    controller, inbox = smtp_server
    key = onboard_org("acme")
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(controller.port))
    monkeypatch.setenv("SMTP_STARTTLS", "false")
    monkeypatch.setenv("SMTP_FROM", "convergence@platform.example.com")
    reset_settings()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    from tests.conftest import function_client

    trigger = function_client("trigger", "trigger")
    body = {"date": "2024-05-01", "min_rows": 5, "notify_to": "finops@acme.example.com"}
    accepted = trigger.post("/api/v1/pipelines/run/acme/gcp/cost/cost_billing", headers={"X-API-Key": key}, json=body)
    assert accepted.status_code == 202, accepted.json
    wait_for_bus(rt)
    run = trigger.get(f"/api/v1/pipelines/runs/{accepted.json['pipeline_logging_id']}", headers={"X-API-Key": key})
    assert run.json["status"] == "FAILED"
    assert "min_rows" in run.json["error_message"]
    deadline = time.monotonic() + 10
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(inbox.messages) == 1
    mail = inbox.messages[0]
    assert mail["To"] == "finops@acme.example.com"
    assert mail["From"] == "convergence@platform.example.com"
    assert "2024-05-01" in mail["Subject"] and "acme" in mail["Subject"]
    assert accepted.json["pipeline_logging_id"] in mail.get_payload()
    assert not (rt.settings.outbox_dir / "acme").exists()
