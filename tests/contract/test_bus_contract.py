"""The Bus port's contract, run against every harness in BUS_FACTORIES.

Publishing goes through the port (Bus.publish / publish_many); what a subscriber receives must be the
CloudEvent functions-framework hands a function behind a Pub/Sub push subscription.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from typing import Any

from common.bus.messages import (
    PUBSUB_EVENT_TYPE,
    ScheduleMessage,
    StepMessage,
    decode_event,
    encode,
    pubsub_payload,
)
from tests.contract.conftest import PROJECT, BusHarness

TIMEOUT = 20.0


class Inbox:
    """A thread-safe subscriber that records every CloudEvent it is pushed, optionally failing first."""

    def __init__(self, fail_times: int = 0, always_fail: bool = False) -> None:
        self.events: list[Any] = []
        self.fail_times = fail_times
        self.always_fail = always_fail
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)
            message_id = event.data["message"]["messageId"]
            self._calls[message_id] += 1
            calls = self._calls[message_id]
        if self.always_fail or calls <= self.fail_times:
            raise RuntimeError("handler failed on purpose")

    def payloads(self) -> list[tuple[bytes, dict[str, str], int]]:
        return [pubsub_payload(e.data) for e in self.events]

    def message_ids(self) -> list[str]:
        return [e.data["message"]["messageId"] for e in self.events]


def step(run_id: str = "run-1", index: int = 0, tenant: str = "acme") -> StepMessage:
    return StepMessage(run_id=run_id, tenant_id=tenant, step_index=index)


def settle(harness: BusHarness) -> None:
    assert harness.wait_idle(TIMEOUT), "the bus did not settle in time"


def test_published_message_reaches_a_subscriber_as_a_pubsub_cloudevent(bus_harness: BusHarness) -> None:
    inbox = Inbox()
    subscription = bus_harness.subscribe("steps", inbox)
    message = step("run-42", 3)
    message_id = bus_harness.bus.publish("steps", message, message.attributes())
    settle(bus_harness)

    assert len(inbox.events) == 1
    event = inbox.events[0]
    assert event["type"] == PUBSUB_EVENT_TYPE == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["id"] and event["source"]
    data = event.data
    assert set(data) >= {"message", "subscription"}
    assert data["subscription"] == f"projects/{PROJECT}/subscriptions/{subscription}"
    assert data["message"]["messageId"] == message_id
    assert json.loads(base64.b64decode(data["message"]["data"])) == json.loads(encode(message))
    assert json.loads(base64.b64decode(data["message"]["data"]))["schema"] == "convergence.step/v1"

    decoded, attributes, attempt = decode_event(event, StepMessage)
    assert decoded == message
    assert attributes["tenant_id"] == "acme"
    assert attributes["run_id"] == "run-42"
    assert attempt == 1


def test_schedule_message_round_trips(bus_harness: BusHarness) -> None:
    inbox = Inbox()
    bus_harness.subscribe("schedules", inbox)
    message = ScheduleMessage(
        template="gcp/cost/cost_billing",
        tenants=["acme", "globex"],
        parameters={"date": "2024-02-29"},
        trigger_by="scheduler",
    )
    bus_harness.bus.publish("schedules", message, message.attributes())
    settle(bus_harness)
    (event,) = inbox.events
    decoded, attributes, _ = decode_event(event, ScheduleMessage)
    assert decoded == message
    assert attributes["template"] == "gcp/cost/cost_billing"


def test_every_subscription_of_a_topic_gets_every_message(bus_harness: BusHarness) -> None:
    first, second, elsewhere = Inbox(), Inbox(), Inbox()
    bus_harness.subscribe("steps", first)
    bus_harness.subscribe("steps", second)
    bus_harness.subscribe("other-topic", elsewhere)
    ids = [bus_harness.bus.publish("steps", step(index=i), step(index=i).attributes()) for i in range(5)]
    settle(bus_harness)
    assert sorted(first.message_ids()) == sorted(ids)
    assert sorted(second.message_ids()) == sorted(ids)
    assert elsewhere.events == []
    subscriptions = {e.data["subscription"] for e in first.events} | {
        e.data["subscription"] for e in second.events
    }
    assert len(subscriptions) == 2


def test_a_failing_handler_is_redelivered_until_it_succeeds(bus_harness: BusHarness) -> None:
    inbox = Inbox(fail_times=2)
    dead = Inbox()
    bus_harness.subscribe("steps", inbox, dead_letter_topic="steps-dlq", max_attempts=5)
    bus_harness.subscribe("steps-dlq", dead)
    message = step("run-retry")
    message_id = bus_harness.bus.publish("steps", message, message.attributes())
    settle(bus_harness)

    assert inbox.message_ids() == [message_id] * 3
    attempts = [attempt for _, _, attempt in inbox.payloads()]
    assert attempts == [1, 2, 3]
    assert all(decode_event(e, StepMessage)[0] == message for e in inbox.events)
    assert dead.events == []


def test_a_handler_that_always_fails_ends_on_the_dead_letter_topic(bus_harness: BusHarness) -> None:
    inbox = Inbox(always_fail=True)
    dead = Inbox()
    bus_harness.subscribe("steps", inbox, dead_letter_topic="steps-dlq", max_attempts=5)
    bus_harness.subscribe("steps-dlq", dead)
    message = step("run-doomed", 2)
    bus_harness.bus.publish("steps", message, message.attributes())
    settle(bus_harness)

    assert [attempt for _, _, attempt in inbox.payloads()] == [1, 2, 3, 4, 5]
    (dead_event,) = dead.events
    data, attributes, _ = pubsub_payload(dead_event.data)
    assert data == encode(message)
    decoded, _, _ = decode_event(dead_event, StepMessage)
    assert decoded == message
    assert attributes["tenant_id"] == "acme" and attributes["run_id"] == "run-doomed"


def test_publish_many_delivers_every_message(bus_harness: BusHarness) -> None:
    inbox = Inbox()
    bus_harness.subscribe("steps", inbox)
    messages = [step(f"run-{i}", i % 7, tenant="acme" if i % 2 else "globex") for i in range(60)]
    ids = bus_harness.bus.publish_many("steps", messages)
    settle(bus_harness)

    assert len(ids) == 60 and len(set(ids)) == 60
    assert sorted(inbox.message_ids()) == sorted(ids)
    received = {}
    for event in inbox.events:
        decoded, attributes, _ = decode_event(event, StepMessage)
        assert attributes["tenant_id"] == decoded.tenant_id  # type: ignore[attr-defined]
        assert attributes["run_id"] == decoded.run_id  # type: ignore[attr-defined]
        received[event.data["message"]["messageId"]] = decoded
    assert [received[i] for i in ids] == messages


def test_duplicate_deliveries_hand_each_message_over_twice(duplicating_bus_harness: BusHarness) -> None:
    inbox = Inbox()
    duplicating_bus_harness.subscribe("steps", inbox)
    ids = [
        duplicating_bus_harness.bus.publish("steps", step(index=i), step(index=i).attributes())
        for i in range(3)
    ]
    settle(duplicating_bus_harness)
    assert Counter(inbox.message_ids()) == {message_id: 2 for message_id in ids}
    for event in inbox.events:
        decoded, _, _ = decode_event(event, StepMessage)
        assert decoded.tenant_id == "acme"  # type: ignore[attr-defined]
