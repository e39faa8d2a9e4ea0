"""Helpers of the mail suites: a real SMTP server on loopback, reading the outbox, starting scheduled runs."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler

from common.bus.messages import ScheduleMessage
from common.runtime import Runtime
from common.services import chunk_starts, pipelines
from common.settings import reset_settings
from common.templates.models import PipelineTemplate
from common.warehouse.sql import table_ref
from tests.conftest import wait_for_bus

ADMIN = "admin@acme.example.com"
FAILING = {"date": "2024-05-01", "min_rows": 5}  # acme has no billing rows that day: cost_billing fails
SENDER = "convergence@platform.example.com"


class Inbox(MessageHandler):
    """Every message the SMTP server received."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []
        self._lock = threading.Lock()

    def handle_message(self, message: Message) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        """The messages once there are `count` of them (or what there is after `timeout`)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.messages)

    def about(self, header: str, value: str) -> list[Message]:
        return [m for m in self.messages if m[header] == value]


@contextmanager
def smtp_server() -> Iterator[tuple[Controller, Inbox]]:
    """An SMTP server on a free loopback port, for the duration of the block."""
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


def use_smtp(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """Settings that send mail to 127.0.0.1:`port` (set before the runtime is built)."""
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(port))
    monkeypatch.setenv("SMTP_STARTTLS", "false")
    monkeypatch.setenv("SMTP_FROM", SENDER)
    reset_settings()


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_mail(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def recipients_of(message: Message) -> list[str]:
    return [address.strip() for address in str(message["To"]).split(",")]


def step_mails(rt: Runtime, tenant: str) -> list[Path]:
    """The outbox files of template steps."""
    return sorted((rt.settings.outbox_dir / tenant).glob("*.eml"))


def notices(rt: Runtime, tenant: str) -> list[Path]:
    """The outbox files of the platform's own notices (welcome, failed scheduled runs)."""
    return sorted((rt.settings.outbox_dir / tenant / "notices").glob("*.eml"))


def claims(rt: Runtime, notice_id: str) -> int:
    """How many times notice `notice_id` is on record (1 once sent)."""
    table = table_ref(rt.settings.control_dataset, "notification_deliveries")
    return len(rt.warehouse.query(f"SELECT 1 AS x FROM {table} WHERE notice_id = @id", {"id": notice_id}))


def run_schedule(rt: Runtime, trigger_type: str = "schedule", **parameters: Any) -> str:
    """Publish a scheduled (or bulk) cost_billing run for acme, let the bus run it, return its (failed) run."""
    message = ScheduleMessage(
        template="gcp/cost/cost_billing", tenants=["acme"], parameters=FAILING | parameters,
        trigger_by="nightly", trigger_type=trigger_type, only_ready=False,  # as a tenant's own schedule
        **({"schedule_id": "nightly", "due_at": "2026-11-22T06:00:00Z"} if trigger_type == "schedule" else {}),
    )  # fmt: skip
    rt.bus.publish(rt.settings.schedules_topic, message, message.attributes())
    wait_for_bus(rt, timeout=120)
    records = rt.warehouse.query(
        f"SELECT pipeline_logging_id, status FROM {table_ref('acme', 'pipeline_runs')}"
        " WHERE trigger_type = @kind ORDER BY seq",
        {"kind": trigger_type},
    )
    assert records and records[-1]["status"] == "FAILED", records
    return records[-1]["pipeline_logging_id"]


def drop_notify_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start from templates as if they had no notify.email step."""
    original = pipelines.load_template

    def load(provider: str, domain: str, name: str) -> PipelineTemplate:
        template = original(provider, domain, name)
        return template.model_copy(
            update={"steps": [s for s in template.steps if s.ps_type != "notify.email"]}
        )

    monkeypatch.setattr(pipelines, "load_template", load)  # API triggers
    monkeypatch.setattr(chunk_starts, "load_template", load)  # scheduled and bulk runs (fan-out chunks)
