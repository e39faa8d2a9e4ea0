"""ensure_topology and PubSubBus against the official Pub/Sub emulator.

What the emulator reports back is checked field by field: topics, push endpoints, ack deadlines, the steps
subscription's dead-letter and retry policies; a second call changes nothing; drift is repaired; and a step
message its endpoint keeps refusing really ends on the dead-letter subscription.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from common.bus.messages import StepMessage, encode
from common.bus.pubsub import PubSubBus, publisher_client, subscriber_client
from common.bus.topology import subscription_names
from common.errors import ConfigurationError, DependencyUnavailable
from convergence.emulators.process import free_port, port_open
from convergence.emulators.pubsub import live_group_members, start_pubsub_emulator
from convergence.pubsub_admin import ensure_topology

NAMES = SimpleNamespace(
    steps_topic="convergence-steps",
    schedules_topic="convergence-schedules",
    dead_letter_topic="convergence-steps-dlq",
)
STEPS_SUB, DLQ_SUB, SCHEDULES_SUB = (subscription_names(NAMES)[t] for t in
                                     (NAMES.steps_topic, NAMES.dead_letter_topic, NAMES.schedules_topic))  # fmt: skip


@pytest.fixture
def project() -> str:
    return f"topology-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def subscriber(pubsub_emulator: str) -> Iterator[Any]:
    client = subscriber_client(pubsub_emulator)
    yield client
    client.close()


class RefusingEndpoint:
    """A push endpoint on 127.0.0.1 that answers 500 to everything and counts what it was sent."""

    def __init__(self) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests += 1
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/step_execute"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def endpoints(dead_letter: str | None = None) -> dict[str, str | None]:
    return {
        NAMES.steps_topic: "http://127.0.0.1:8081/step_execute",
        NAMES.schedules_topic: "http://127.0.0.1:8082/trigger",
        NAMES.dead_letter_topic: dead_letter,
    }


def test_ensure_topology_creates_topics_and_subscriptions_as_configured(
    pubsub_emulator: str, project: str, subscriber: Any
) -> None:
    topology = ensure_topology(
        project, NAMES, endpoints(), ack_deadline_seconds=540, minimum_backoff=5, maximum_backoff=300,
        emulator_host=pubsub_emulator,
    )  # fmt: skip

    topics = {f"projects/{project}/topics/{t}" for t in vars(NAMES).values()}
    publisher = publisher_client(pubsub_emulator)
    try:
        assert {t.name for t in publisher.list_topics(project=f"projects/{project}")} == topics
    finally:
        publisher.transport.close()
    assert set(topology.topics.values()) == topics
    assert len(topology.created) == 6

    steps = subscriber.get_subscription(subscription=f"projects/{project}/subscriptions/{STEPS_SUB}")
    assert steps.topic == f"projects/{project}/topics/convergence-steps"
    assert steps.push_config.push_endpoint == "http://127.0.0.1:8081/step_execute"
    assert steps.ack_deadline_seconds == 540
    assert steps.dead_letter_policy.dead_letter_topic == f"projects/{project}/topics/convergence-steps-dlq"
    assert steps.dead_letter_policy.max_delivery_attempts == 5
    assert steps.retry_policy.minimum_backoff.total_seconds() == 5
    assert steps.retry_policy.maximum_backoff.total_seconds() == 300

    dead = subscriber.get_subscription(subscription=f"projects/{project}/subscriptions/{DLQ_SUB}")
    assert dead.topic == f"projects/{project}/topics/convergence-steps-dlq"
    assert dead.push_config.push_endpoint == ""  # no endpoint given: a pull subscription
    assert dead.ack_deadline_seconds == 540
    assert not dead.dead_letter_policy.dead_letter_topic

    schedules = subscriber.get_subscription(subscription=f"projects/{project}/subscriptions/{SCHEDULES_SUB}")
    assert schedules.topic == f"projects/{project}/topics/convergence-schedules"
    assert schedules.push_config.push_endpoint == "http://127.0.0.1:8082/trigger"
    assert not schedules.dead_letter_policy.dead_letter_topic


def test_second_call_changes_nothing(pubsub_emulator: str, project: str) -> None:
    first = ensure_topology(project, NAMES, endpoints(), emulator_host=pubsub_emulator)
    second = ensure_topology(project, NAMES, endpoints(), emulator_host=pubsub_emulator)
    assert len(first.created) == 6
    assert second.created == [] and second.updated == []
    assert (second.topics, second.subscriptions) == (first.topics, first.subscriptions)


def test_a_drifted_subscription_is_put_back(pubsub_emulator: str, project: str, subscriber: Any) -> None:
    ensure_topology(project, NAMES, endpoints(), emulator_host=pubsub_emulator)
    steps = f"projects/{project}/subscriptions/{STEPS_SUB}"
    subscriber.modify_push_config(
        request={"subscription": steps, "push_config": {"push_endpoint": "http://127.0.0.1:9/elsewhere"}}
    )
    again = ensure_topology(project, NAMES, endpoints(), emulator_host=pubsub_emulator)
    assert again.created == [] and again.updated == [steps]
    assert (
        subscriber.get_subscription(subscription=steps).push_config.push_endpoint
        == endpoints()[NAMES.steps_topic]
    )


def test_dead_letter_subscription_can_push_too(pubsub_emulator: str, project: str, subscriber: Any) -> None:
    closer = "http://127.0.0.1:8081/step_dead_letter"
    ensure_topology(project, NAMES, endpoints(dead_letter=closer), emulator_host=pubsub_emulator)
    dead = subscriber.get_subscription(subscription=f"projects/{project}/subscriptions/{DLQ_SUB}")
    assert dead.push_config.push_endpoint == closer


def test_a_step_its_endpoint_keeps_refusing_lands_on_the_dead_letter_subscription(
    pubsub_emulator: str, project: str, subscriber: Any
) -> None:
    refusing = RefusingEndpoint()
    bus = PubSubBus(project, emulator_host=pubsub_emulator)
    try:
        ensure_topology(
            project, NAMES, {NAMES.steps_topic: refusing.url}, ack_deadline_seconds=10,
            minimum_backoff=0.1, maximum_backoff=1, emulator_host=pubsub_emulator,
        )  # fmt: skip
        message = StepMessage(run_id="run-doomed", tenant_id="acme", step_index=1)
        bus.publish(NAMES.steps_topic, message)
        dead_letters = f"projects/{project}/subscriptions/{DLQ_SUB}"
        received: list[Any] = []
        deadline = time.monotonic() + 40
        while not received and time.monotonic() < deadline:
            received = list(subscriber.pull(request={"subscription": dead_letters, "max_messages": 5}, timeout=5)
                            .received_messages)  # fmt: skip
            if not received:
                time.sleep(0.5)
        (dead,) = received
        assert dead.message.data == encode(message)
        attributes = dict(dead.message.attributes)
        assert attributes["tenant_id"] == "acme" and attributes["run_id"] == "run-doomed"
        assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
        assert attributes["CloudPubSubDeadLetterSourceSubscription"] == STEPS_SUB
        assert refusing.requests == 5
        subscriber.acknowledge(request={"subscription": dead_letters, "ack_ids": [dead.ack_id]})
    finally:
        bus.close()
        refusing.close()


def test_out_of_range_settings_are_refused_before_touching_pubsub() -> None:
    with pytest.raises(ConfigurationError, match="dead_letter_max_attempts"):
        ensure_topology("any-project", NAMES, {}, dead_letter_max_attempts=3, emulator_host="127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="ack_deadline_seconds"):
        ensure_topology("any-project", NAMES, {}, ack_deadline_seconds=601, emulator_host="127.0.0.1:9")


def test_publishing_to_a_topic_that_does_not_exist_is_dependency_unavailable(
    pubsub_emulator: str, project: str
) -> None:
    bus = PubSubBus(project, emulator_host=pubsub_emulator)
    try:
        with pytest.raises(DependencyUnavailable, match="does not exist"):
            bus.publish("nowhere", StepMessage(run_id="r", tenant_id="acme", step_index=0))
        with pytest.raises(DependencyUnavailable, match="were not published"):
            bus.publish_many("nowhere", [StepMessage(run_id="r", tenant_id="acme", step_index=0)])
    finally:
        bus.close()


def test_publishing_with_pubsub_down_is_dependency_unavailable_within_the_timeout() -> None:
    bus = PubSubBus("local-project", emulator_host=f"127.0.0.1:{free_port()}", publish_timeout=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(DependencyUnavailable):
            bus.publish("convergence-steps", StepMessage(run_id="r", tenant_id="acme", step_index=0))
    finally:
        bus.close()
    assert time.monotonic() - started < 10


def test_publish_many_returns_ids_in_order_and_a_closed_bus_refuses(
    pubsub_emulator: str, project: str
) -> None:
    ensure_topology(project, NAMES, {}, emulator_host=pubsub_emulator)
    bus = PubSubBus(project, emulator_host=pubsub_emulator)
    messages = [StepMessage(run_id=f"run-{i}", tenant_id="acme", step_index=0) for i in range(250)]
    ids = bus.publish_many(NAMES.steps_topic, messages)
    assert len(set(ids)) == 250
    pulled: dict[str, bytes] = {}
    client = subscriber_client(pubsub_emulator)
    try:
        subscription = f"projects/{project}/subscriptions/{STEPS_SUB}"
        deadline = time.monotonic() + 30
        while len(pulled) < 250 and time.monotonic() < deadline:
            response = client.pull(request={"subscription": subscription, "max_messages": 250}, timeout=5)
            pulled.update({m.message.message_id: m.message.data for m in response.received_messages})
            client.acknowledge(request={"subscription": subscription,
                                        "ack_ids": [m.ack_id for m in response.received_messages]})  # fmt: skip
    finally:
        client.close()
    assert [pulled[i] for i in ids] == [encode(m) for m in messages]
    bus.close()
    with pytest.raises(DependencyUnavailable, match="closed"):
        bus.publish(NAMES.steps_topic, messages[0])


def test_stopping_the_emulator_stops_its_java_child(tmp_path: Any) -> None:
    port = free_port()
    emulator = start_pubsub_emulator(port, tmp_path / "data", tmp_path / "emulator.log")
    group = emulator.pid
    assert group is not None and len(live_group_members(group)) >= 2  # gcloud and java
    emulator.stop()
    assert live_group_members(group) == []
    assert not port_open(port)
