"""The bus contract on the official Pub/Sub emulator: PubSubBus publishes, real push subscriptions deliver.

Delivery path, as in production:

    PubSubBus ──gRPC──▶ emulator ──push (HTTP POST)──▶ EventarcShim ──binary CloudEvent──▶ functions-framework
                                                                                      app (CloudEvent function)

A gen2 function sits behind Eventarc, which hands it the push envelope as a binary-mode CloudEvent
(ce-type google.cloud.pubsub.topic.v1.messagePublished, ce-source //pubsub.googleapis.com/projects/P/topics/T,
data {"message": ..., "subscription": ...}). The emulator has no Eventarc: it POSTs the raw envelope and
ignores the `?__GCP_CloudEventsMode=` endpoint marker that asks real Pub/Sub for CloudEvents. Handed a raw
envelope, functions-framework would build a *different* event (no "subscription", no "deliveryAttempt"), so
the shim does Eventarc's part, then calls a real functions-framework app (`create_app`) whose 500 on a handler
error goes back to the emulator, which redelivers.

Emulator gaps the shim fills, as real Pub/Sub behaves:
- the emulator's push body has no "deliveryAttempt" even with a dead-letter policy (its pull responses do
  count it); the shim counts the pushes of each message per subscription and adds the field when the
  subscription has a dead-letter policy. Dead-lettering itself is the emulator's own: after max_attempts
  failed pushes it forwards the message to the dead-letter topic with the CloudPubSubDeadLetterSource*
  attributes.
- the emulator cannot say when it is idle (no backlog metrics), so `wait_idle` counts: every message
  published through the bus must be acknowledged by every subscription of its topic, and every dead-lettered
  message by every subscription of the dead-letter topic.

The suite asserts subscription paths in project PROJECT, so every harness uses that project; harnesses stay
apart through unique subscription names, and each deletes its subscriptions and the topics it created.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import functions_framework
import pytest
from google.api_core import exceptions as api_exceptions
from google.pubsub_v1 import types as pubsub_types
from pydantic import BaseModel
from werkzeug.serving import make_server
from werkzeug.test import EnvironBuilder, run_wsgi_app
from werkzeug.wrappers import Request, Response

from common.bus.messages import PUBSUB_EVENT_TYPE
from common.bus.pubsub import PubSubBus, publisher_client, subscriber_client, subscription_path, topic_path
from tests.contract.conftest import PROJECT, BusHarness, Handler

DEAD_LETTER_SOURCE = "CloudPubSubDeadLetterSourceSubscription"
ACK_DEADLINE_SECONDS = 30

# -- the CloudEvent function every push subscription ends in ----------------------------------------------

#: full subscription path → the handler the suite subscribed
_SUBSCRIBERS: dict[str, Handler] = {}
_FUNCTION_SOURCE = '''"""The CloudEvent function behind the Pub/Sub contract harness's push subscriptions."""
import functions_framework

from tests.contract.adapters_pubsub import deliver_to_subscriber


@functions_framework.cloud_event
def pubsub_subscriber(cloud_event):
    deliver_to_subscriber(cloud_event)
'''
_function_app: Any = None
_function_source_folders: list[tempfile.TemporaryDirectory[str]] = []
_function_lock = threading.Lock()


def deliver_to_subscriber(cloud_event: Any) -> None:
    """Hand the CloudEvent to the handler of the subscription it came through."""
    _SUBSCRIBERS[cloud_event.data["subscription"]](cloud_event)


def function_app() -> Any:
    """One functions-framework app (signature cloudevent) for the process, loaded like a deployed main.py."""
    global _function_app
    with _function_lock:
        if _function_app is None:
            folder = tempfile.TemporaryDirectory(prefix="pubsub-contract-function-")  # removed at exit
            _function_source_folders.append(folder)
            source = Path(folder.name) / "pubsub_contract_function.py"
            source.write_text(_FUNCTION_SOURCE)
            _function_app = functions_framework.create_app("pubsub_subscriber", str(source), "cloudevent")
    return _function_app


def eventarc_request(envelope: dict[str, Any], topic: str) -> tuple[dict[str, str], bytes]:
    """(headers, body) of the binary-mode CloudEvent Eventarc makes of one Pub/Sub push envelope."""
    message = envelope["message"]
    headers = {
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-type": PUBSUB_EVENT_TYPE,
        "ce-source": f"//pubsub.googleapis.com/{topic}",
        "ce-id": message["messageId"],
    }
    if message.get("publishTime"):
        headers["ce-time"] = message["publishTime"]
    return headers, json.dumps(envelope).encode()


# -- harness ----------------------------------------------------------------------------------------------


class _ObservedPubSubBus(PubSubBus):
    """PubSubBus that tells the harness which message ids it published (so it knows what to wait for)."""

    def __init__(self, project: str, harness: PubSubHarness, **options: Any) -> None:
        super().__init__(project, **options)
        self._harness = harness

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        message_id = super().publish_raw(topic, data, attributes)
        self._harness.published(topic, [message_id])
        return message_id

    def publish_many(self, topic: str, messages: Sequence[BaseModel]) -> list[str]:
        ids = super().publish_many(topic, messages)
        self._harness.published(topic, ids)
        return ids


class _Route:
    def __init__(self, topic: str, dead_letter_topic: str | None, max_attempts: int) -> None:
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self.max_attempts = max_attempts


class PubSubHarness(BusHarness):
    """PubSubBus on the emulator, push subscriptions to a local Eventarc shim + functions-framework app."""

    #: the emulator cannot be told to duplicate deliveries: no "duplicate_deliveries" here
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, request: pytest.FixtureRequest, **faults: Any) -> None:
        if faults:
            raise TypeError(f"the Pub/Sub emulator harness cannot inject faults: {sorted(faults)}")
        self.emulator_host: str = request.getfixturevalue("pubsub_emulator")
        self.project = PROJECT
        self.bus = _ObservedPubSubBus(PROJECT, self, emulator_host=self.emulator_host)
        self._publisher = publisher_client(self.emulator_host)  # topic admin
        self._subscriber = subscriber_client(self.emulator_host)  # subscription admin
        self._routes: dict[str, _Route] = {}
        self._topic_subscriptions: dict[str, list[str]] = {}
        self._created_topics: list[str] = []
        self._cond = threading.Condition()
        self._deliveries: Counter[tuple[str, str]] = Counter()
        self._expected: set[tuple[str, str]] = set()
        self._settled: set[tuple[str, str]] = set()
        self._dead_letters_due: Counter[str] = Counter()
        self._dead_letters_acked: Counter[str] = Counter()
        self._function = function_app()
        self._server = make_server("127.0.0.1", 0, self._push_endpoint, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="pubsub-push", daemon=True
        )
        self._thread.start()

    # -- BusHarness -------------------------------------------------------------------------------------
    def subscribe(
        self, topic: str, handler: Handler, *, dead_letter_topic: str | None = None, max_attempts: int = 5
    ) -> str:
        name = self.subscription_name(topic)
        path = subscription_path(PROJECT, name)
        topic_full = self._ensure_topic(topic)
        spec = pubsub_types.Subscription(
            name=path,
            topic=topic_full,
            ack_deadline_seconds=ACK_DEADLINE_SECONDS,
            push_config=pubsub_types.PushConfig(
                push_endpoint=f"http://127.0.0.1:{self._server.server_port}/{topic_full}"
            ),
        )  # no retry policy: the emulator then redelivers about every second (with one: every 3 s or more)
        if dead_letter_topic:
            spec.dead_letter_policy = pubsub_types.DeadLetterPolicy(
                dead_letter_topic=self._ensure_topic(dead_letter_topic), max_delivery_attempts=max_attempts
            )
        with self._cond:
            self._routes[path] = _Route(
                topic_full, spec.dead_letter_policy.dead_letter_topic or None, max_attempts
            )
            self._topic_subscriptions.setdefault(topic_full, []).append(path)
        _SUBSCRIBERS[path] = handler
        self._subscriber.create_subscription(request=spec)
        return name

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(self._idle, timeout)

    def close(self) -> None:
        try:
            for path in list(self._routes):
                _ignore_not_found(lambda path=path: self._subscriber.delete_subscription(subscription=path))
                _SUBSCRIBERS.pop(path, None)
            for topic in self._created_topics:
                _ignore_not_found(lambda topic=topic: self._publisher.delete_topic(topic=topic))
        finally:
            self._server.shutdown()
            self._server.server_close()
            self.bus.close()
            self._subscriber.close()
            self._publisher.transport.close()

    # -- bookkeeping ------------------------------------------------------------------------------------
    def published(self, topic: str, message_ids: Iterable[str]) -> None:
        """Every subscription of `topic` now owes an acknowledgement for each of these messages."""
        full = topic_path(PROJECT, topic)
        with self._cond:
            subscriptions = self._topic_subscriptions.get(full, [])
            self._expected.update((sub, mid) for mid in message_ids for sub in subscriptions)
            self._cond.notify_all()

    def _idle(self) -> bool:
        return self._expected <= self._settled and all(
            self._dead_letters_acked[sub] >= due for sub, due in self._dead_letters_due.items()
        )

    def _ensure_topic(self, topic: str) -> str:
        full = topic_path(PROJECT, topic)
        try:
            self._publisher.create_topic(name=full)
            self._created_topics.append(full)
        except api_exceptions.AlreadyExists:
            pass
        return full

    # -- the push endpoint (Eventarc's part) ------------------------------------------------------------
    def _push_endpoint(self, environ: dict[str, Any], start_response: Any) -> Any:
        envelope = Request(environ).get_json(silent=True)
        if not isinstance(envelope, dict) or "subscription" not in envelope or "message" not in envelope:
            return Response("not a Pub/Sub push envelope", 400)(environ, start_response)
        subscription, message = envelope["subscription"], envelope["message"]
        route = self._routes.get(subscription)
        if route is None:  # a subscription of a closed harness, about to be deleted
            return Response("unknown subscription", 404)(environ, start_response)
        key = (subscription, message["messageId"])
        with self._cond:
            self._deliveries[key] += 1
            attempt = self._deliveries[key]
        if route.dead_letter_topic:  # real Pub/Sub adds it to push envelopes when a dead-letter policy is set
            envelope["deliveryAttempt"] = attempt
        headers, body = eventarc_request(envelope, route.topic)
        builder = EnvironBuilder(path="/", method="POST", headers=headers, data=body)
        try:
            app_iter, status, response_headers = run_wsgi_app(
                self._function, builder.get_environ(), buffered=True
            )
        finally:
            builder.close()
        self._settle(key, route, attempt, message, ok=status.startswith("2"))
        start_response(status, list(response_headers.items()))
        return app_iter

    def _settle(
        self, key: tuple[str, str], route: _Route, attempt: int, message: dict[str, Any], *, ok: bool
    ) -> None:
        with self._cond:
            if ok and key not in self._settled:
                self._settled.add(key)
                if DEAD_LETTER_SOURCE in (message.get("attributes") or {}) and key not in self._expected:
                    self._dead_letters_acked[key[0]] += 1
            elif not ok and route.dead_letter_topic and attempt >= route.max_attempts:
                # the emulator now forwards the message to the dead-letter topic (new id, new deliveries)
                self._settled.add(key)
                for sub in self._topic_subscriptions.get(route.dead_letter_topic, []):
                    self._dead_letters_due[sub] += 1
            self._cond.notify_all()


def _ignore_not_found(call: Any) -> None:
    try:
        call()
    except api_exceptions.NotFound:
        pass


BUS_FACTORIES = {"pubsub": PubSubHarness}
