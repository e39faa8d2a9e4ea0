"""Scheduled and bulk runs: one schedules message starts a template for many tenants."""

from __future__ import annotations

import logging
from typing import Any

from common.bus.messages import DeadMessage, ScheduleMessage, decode_event
from common.errors import Conflict, ConvergenceError, TerminalError
from common.metadata import control
from common.runtime import Runtime, get_runtime
from common.services import pipelines

log = logging.getLogger(__name__)


def start_for_tenants(rt: Runtime, message: ScheduleMessage) -> dict[str, int]:
    """Start the message's template for each named (or every active) tenant; count the outcomes."""
    provider, domain, template = message.template.split("/")
    active = control.active_org_slugs(rt)
    tenants = active if message.tenants == "*" else [t for t in message.tenants if t in set(active)]
    outcome = {"started": 0, "in_flight": 0, "failed": 0, "unknown_tenants": 0}
    if message.tenants != "*":
        outcome["unknown_tenants"] = len(set(message.tenants) - set(active))
    body = dict(message.parameters) | {"trigger_by": message.trigger_by}
    for tenant in tenants:
        try:
            pipelines.start_run(rt, tenant, provider, domain, template, body, trigger_type=message.trigger_type)
            outcome["started"] += 1
        except Conflict:
            outcome["in_flight"] += 1
        except ConvergenceError as exc:
            outcome["failed"] += 1
            log.error("scheduled %s for %s not started: %s", message.template, tenant, exc.message)
    return outcome


def handle_schedule_event(event: Any) -> None:
    """CloudEvent entry of the trigger function for the schedules topic."""
    try:
        message, _attributes, _attempt = decode_event(event, ScheduleMessage)
    except DeadMessage as exc:
        log.error("dropping schedules message: %s", exc)
        return
    try:
        outcome = start_for_tenants(get_runtime(), message)  # type: ignore[arg-type]
    except TerminalError as exc:  # e.g. not bootstrapped yet: redelivery cannot help, so acknowledge
        log.error("schedules message for %s not processed: %s", message.template, exc.message)  # type: ignore[attr-defined]
        return
    log.info("schedules message for %s: %s", message.template, outcome)  # type: ignore[attr-defined]
