"""In-process bus with Pub/Sub push semantics, for embedded mode and tests.

Each subscription gets every message at least once, as the same CloudEvent that functions-framework hands
a function behind a Pub/Sub push subscription (type google.cloud.pubsub.topic.v1.messagePublished, data
{"message": {"data": base64, "attributes", "messageId", "publishTime"}, "subscription"}). A handler that
raises is retried with backoff; after `max_attempts` deliveries the message goes to the dead-letter topic.
`duplicate_deliveries` and `fail_prob` inject the faults real Pub/Sub produces (redelivery, transient errors).
"""

from __future__ import annotations

import base64
import heapq
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cloudevents.http import CloudEvent
from pydantic import BaseModel

from common.bus.base import Bus, message_attributes
from common.bus.messages import PUBSUB_EVENT_TYPE, encode
from common.errors import DependencyUnavailable, TransientError
from common.types import iso_utc, utcnow

log = logging.getLogger(__name__)
Handler = Callable[[CloudEvent], Any]


@dataclass
class Subscription:
    name: str
    topic: str
    handler: Handler
    dead_letter_topic: str | None = None
    max_attempts: int = 5


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    subscription: Subscription = field(compare=False)
    data: bytes = field(compare=False)
    attributes: dict[str, str] = field(compare=False)
    message_id: str = field(compare=False)
    publish_time: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


class InjectedFault(TransientError):
    code = "injected_fault"


class LocalBus(Bus):
    """Threaded in-process Pub/Sub stand-in with push subscriptions, retries and dead-lettering."""

    name = "local"

    def __init__(
        self,
        project: str,
        *,
        workers: int = 2,
        retry_delay: float = 0.05,
        max_retry_delay: float = 1.0,
        duplicate_deliveries: int = 1,
        fail_prob: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.project = project
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.duplicate_deliveries = max(1, duplicate_deliveries)
        self.fail_prob = fail_prob
        self._random = random.Random(seed)
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._closed = False
        self.dead_lettered: list[tuple[str, bytes, dict[str, str]]] = []
        self._threads = [
            threading.Thread(target=self._work, name=f"local-bus-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # -- wiring ---------------------------------------------------------------------------------------
    def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        name: str | None = None,
        dead_letter_topic: str | None = None,
        max_attempts: int = 5,
    ) -> Subscription:
        """Push every message of `topic` to `handler` (a CloudEvent function)."""
        sub = Subscription(name or f"{topic}-push", topic, handler, dead_letter_topic, max_attempts)
        self._subscriptions.setdefault(topic, []).append(sub)
        return sub

    # -- port -----------------------------------------------------------------------------------------
    def publish(self, topic: str, message: BaseModel, attributes: dict[str, str] | None = None) -> str:
        return self.publish_raw(topic, encode(message), message_attributes(message, attributes))

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        """Publish bytes as they are (tests use it for malformed messages)."""
        if self._closed:
            raise DependencyUnavailable("the local bus is closed")
        message_id = uuid.uuid4().hex
        publish_time = iso_utc(utcnow())
        with self._cond:
            for sub in self._subscriptions.get(topic, []):
                for _ in range(self.duplicate_deliveries):
                    self._push(_Delivery(time.monotonic(), next(self._seq), sub, data, dict(attributes),
                                         message_id, publish_time))
        return message_id

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every published message has been handled (acked or dead-lettered)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- delivery -------------------------------------------------------------------------------------
    def _push(self, delivery: _Delivery) -> None:
        heapq.heappush(self._heap, delivery)
        self._outstanding += 1
        self._cond.notify_all()

    def _next(self) -> _Delivery | None:
        with self._cond:
            while not self._closed:
                if self._heap:
                    wait = self._heap[0].due - time.monotonic()
                    if wait <= 0:
                        return heapq.heappop(self._heap)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            return None

    def _work(self) -> None:
        while (delivery := self._next()) is not None:
            try:
                self._deliver(delivery)
            finally:
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

    def _event(self, d: _Delivery) -> CloudEvent:
        sub = d.subscription
        message = {
            "data": base64.b64encode(d.data).decode(),
            "attributes": d.attributes,
            "messageId": d.message_id,
            "message_id": d.message_id,
            "publishTime": d.publish_time,
            "publish_time": d.publish_time,
        }
        return CloudEvent(
            {
                "type": PUBSUB_EVENT_TYPE,
                "source": f"//pubsub.googleapis.com/projects/{self.project}/topics/{sub.topic}",
                "id": d.message_id,
                "time": d.publish_time,
                "datacontenttype": "application/json",
            },
            {
                "message": message,
                "subscription": f"projects/{self.project}/subscriptions/{sub.name}",
                "deliveryAttempt": d.attempt,
            },
        )

    def _deliver(self, d: _Delivery) -> None:
        sub = d.subscription
        try:
            if self.fail_prob and self._random.random() < self.fail_prob:
                raise InjectedFault("injected transient fault")
            sub.handler(self._event(d))
            return
        except Exception as exc:  # a push endpoint answering non-2xx: Pub/Sub redelivers
            log.warning("delivery %s of %s to %s failed: %s", d.attempt, d.message_id, sub.name, exc)
        if d.attempt >= sub.max_attempts and sub.dead_letter_topic:
            attributes = dict(d.attributes, CloudPubSubDeadLetterSourceDeliveryCount=str(d.attempt),
                              CloudPubSubDeadLetterSourceSubscription=sub.name)
            self.dead_lettered.append((sub.dead_letter_topic, d.data, attributes))
            self.publish_raw(sub.dead_letter_topic, d.data, attributes)
            return
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** (d.attempt - 1))
        with self._cond:
            if not self._closed:
                self._push(_Delivery(time.monotonic() + delay, next(self._seq), sub, d.data, d.attributes,
                                     d.message_id, d.publish_time, d.attempt + 1))
