"""CloudEvent entry points: decode a Pub/Sub push, call one service, decide acknowledge or redeliver.

A message that can never be processed (unknown schema, malformed data, a terminal error) is logged and
acknowledged by returning; a transient error raises so Pub/Sub redelivers it with backoff.
"""

from __future__ import annotations

import logging
from typing import Any

from common.bus.messages import DeadMessage, DispatchMessage, ScheduleMessage, StepMessage, decode_event
from common.errors import TerminalError
from common.runtime import Runtime
from common.services import dispatcher, execution, fanout

log = logging.getLogger(__name__)

# Pub/Sub marks a message it forwards to the dead-letter topic with this attribute.
DEAD_LETTER_ATTRIBUTE = "CloudPubSubDeadLetterSourceDeliveryCount"


def handle_step_event(rt: Runtime, event: Any) -> None:
    """step_execute: execute the step and publish the next one.

    A message marked as dead-lettered closes its step as failed instead, so one function can serve both
    subscriptions.
    """
    _handle_step(rt, event, dead_letter_subscription=False)


def handle_dead_letter_event(rt: Runtime, event: Any) -> None:
    """A dead-letter subscription: every message on it has exhausted its deliveries."""
    _handle_step(rt, event, dead_letter_subscription=True)


def _handle_step(rt: Runtime, event: Any, *, dead_letter_subscription: bool) -> None:
    try:
        message, attributes, attempt = decode_event(event, StepMessage)
        assert isinstance(message, StepMessage)
        if dead_letter_subscription or DEAD_LETTER_ATTRIBUTE in attributes:
            attempts = int(attributes.get(DEAD_LETTER_ATTRIBUTE) or rt.settings.step_max_attempts)
            execution.publish_next(rt, execution.fail_step_after_retries(rt, message, attempts))
        else:
            execution.publish_next(rt, execution.execute_step(rt, message, attempt))
    except DeadMessage as exc:
        log.error("dropping step message: %s", exc)
    except TerminalError as exc:  # e.g. the tenant or its tables do not exist: redelivery cannot help
        log.error("dropping step message that cannot be processed: %s", exc.message)


def handle_schedule_event(rt: Runtime, event: Any) -> None:
    """trigger_schedules: schedule and bulk messages (fan-out) and dispatcher ticks on the schedules topic."""
    try:
        message, _attributes, _attempt = decode_event(event, (ScheduleMessage, DispatchMessage))
    except DeadMessage as exc:
        log.error("dropping schedules message: %s", exc)
        return
    if isinstance(message, DispatchMessage):
        dispatcher.run_dispatch_tick(rt, message)
        return
    assert isinstance(message, ScheduleMessage)
    try:
        outcome = fanout.start_for_tenants(rt, message)
    except TerminalError as exc:  # e.g. not bootstrapped yet: redelivery cannot help, so acknowledge
        log.error("schedules message for %s not processed: %s", message.template, exc.message)
        return
    log.info("schedules message for %s: %s", message.template, outcome)
