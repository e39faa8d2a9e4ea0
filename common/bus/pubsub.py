"""The Bus port on Google Cloud Pub/Sub (google-cloud-pubsub), with batched publishing.

The publisher client is built once per bus, on first publish, with batch settings so that `publish_many`
(fan-out) sends hundreds of messages per request. `publish` waits for the server's message id, so a caller
that publishes the next step before acknowledging its own message never loses it.

Emulator: the client library honours PUBSUB_EMULATOR_HOST by itself; `emulator_host` says the same thing
explicitly (settings, tests) without touching os.environ: the client then talks plain gRPC to that host with
no credentials.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core import retry as api_retry
from google.cloud import pubsub_v1
from pydantic import BaseModel

from common.bus.base import Bus, message_attributes
from common.bus.messages import encode
from common.errors import DependencyUnavailable, TerminalError

#: Publish RPC errors worth retrying inside the client before giving up (as the library's own default).
_TRANSIENT = api_retry.if_exception_type(
    api_exceptions.Aborted,
    api_exceptions.Cancelled,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.Unknown,
)


def topic_path(project: str, topic: str) -> str:
    """`projects/P/topics/T` for a short topic name; a full path is returned as it is."""
    return topic if topic.startswith("projects/") else f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    """`projects/P/subscriptions/S` for a short subscription name; a full path is returned as it is."""
    if subscription.startswith("projects/"):
        return subscription
    return f"projects/{project}/subscriptions/{subscription}"


def _emulator_channel(emulator_host: str) -> Any:
    import grpc

    return grpc.insecure_channel(emulator_host.removeprefix("http://"))


def publisher_client(
    emulator_host: str | None = None, batch_settings: pubsub_v1.types.BatchSettings | None = None
) -> pubsub_v1.PublisherClient:
    """A PublisherClient; with `emulator_host`, plain gRPC to the emulator and no credentials."""
    options: dict[str, Any] = {}
    if batch_settings is not None:
        options["batch_settings"] = batch_settings
    if emulator_host:
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        host = emulator_host.removeprefix("http://")
        options["transport"] = PublisherGrpcTransport(host=host, channel=_emulator_channel(host))
    return pubsub_v1.PublisherClient(**options)


def subscriber_client(emulator_host: str | None = None) -> pubsub_v1.SubscriberClient:
    """A SubscriberClient (subscription admin, pull); with `emulator_host`, plain gRPC to the emulator."""
    if not emulator_host:
        return pubsub_v1.SubscriberClient()
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    host = emulator_host.removeprefix("http://")
    return pubsub_v1.SubscriberClient(
        transport=SubscriberGrpcTransport(host=host, channel=_emulator_channel(host))
    )


class PubSubBus(Bus):
    """Publishes versioned messages to Pub/Sub topics of one project; delivery is Pub/Sub's (push subscriptions)."""

    name = "pubsub"

    def __init__(
        self,
        project: str,
        *,
        emulator_host: str | None = None,
        max_messages: int = 500,
        max_bytes: int = 1_000_000,
        max_latency: float = 0.01,
        publish_timeout: float = 30.0,
        client: pubsub_v1.PublisherClient | None = None,
    ) -> None:
        self.project = project
        self.emulator_host = emulator_host
        self.batch_settings = pubsub_v1.types.BatchSettings(
            max_bytes=max_bytes, max_latency=max_latency, max_messages=max_messages
        )
        self.publish_timeout = publish_timeout
        self._retry = api_retry.Retry(
            predicate=_TRANSIENT, initial=0.1, maximum=5.0, multiplier=2.0, timeout=publish_timeout
        )
        self._client = client
        self._lock = threading.Lock()
        self._closed = False

    # -- client -----------------------------------------------------------------------------------------
    @property
    def client(self) -> pubsub_v1.PublisherClient:
        """The publisher client, created on first use."""
        if self._client is None:
            with self._lock:
                if self._closed:
                    raise DependencyUnavailable("the Pub/Sub bus is closed")
                if self._client is None:
                    self._client = publisher_client(self.emulator_host, self.batch_settings)
        return self._client

    # -- port -------------------------------------------------------------------------------------------
    def publish(self, topic: str, message: BaseModel, attributes: dict[str, str] | None = None) -> str:
        return self.publish_raw(topic, encode(message), message_attributes(message, attributes))

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        """Publish bytes as they are and return the message id (tests use it for malformed messages)."""
        path = topic_path(self.project, topic)
        return self._result(path, self._submit(path, data, attributes))

    def publish_many(self, topic: str, messages: Sequence[BaseModel]) -> list[str]:
        """Hand every message to the batching client first, then wait for all ids: one request per batch."""
        path = topic_path(self.project, topic)
        futures = [self._submit(path, encode(m), message_attributes(m, None)) for m in messages]
        ids: list[str] = []
        failure: DependencyUnavailable | None = None
        for future in futures:
            try:
                ids.append(self._result(path, future))
            except DependencyUnavailable as exc:
                failure = failure or exc
        if failure is not None:
            raise DependencyUnavailable(
                f"{len(futures) - len(ids)} of {len(futures)} messages to {path} were not published: {failure.message}"
            )
        return ids

    def close(self) -> None:
        """Send what is batched, then release the channel."""
        with self._lock:
            self._closed, client, self._client = True, self._client, None
        if client is not None:
            try:
                client.stop()
            finally:
                client.transport.close()

    # -- helpers ----------------------------------------------------------------------------------------
    def _submit(self, path: str, data: bytes, attributes: dict[str, str]) -> concurrent.futures.Future:
        if self._closed:
            raise DependencyUnavailable("the Pub/Sub bus is closed")
        try:
            return self.client.publish(
                path, data, retry=self._retry, timeout=self.publish_timeout, **attributes
            )
        except (ValueError, TypeError) as exc:  # too large, non-text attributes: retrying cannot help
            raise TerminalError(f"cannot publish to {path}: {exc}", code="bad_message") from None
        except RuntimeError as exc:  # the client was stopped
            raise DependencyUnavailable(f"cannot publish to {path}: {exc}") from None

    def _result(self, path: str, future: concurrent.futures.Future) -> str:
        try:
            return str(future.result(timeout=self.publish_timeout))
        except concurrent.futures.TimeoutError:
            raise DependencyUnavailable(
                f"Pub/Sub did not accept a message for {path} within {self.publish_timeout:g} s"
            ) from None
        except api_exceptions.NotFound:
            raise DependencyUnavailable(f"Pub/Sub topic {path} does not exist") from None
        except (api_exceptions.GoogleAPIError, OSError) as exc:
            raise DependencyUnavailable(f"Pub/Sub refused a message for {path}: {exc}") from None
