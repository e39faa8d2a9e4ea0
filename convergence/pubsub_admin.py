"""Create the Pub/Sub topology Convergence runs on, idempotently (emulator mode, local set-ups, checks).

    steps topic ──push──▶ step_execute      (dead-letter policy: after N deliveries → dead-letter topic)
    dead-letter topic ──push or pull──▶ the closer of given-up runs
    schedules topic ──push──▶ trigger

Production creates the same resources with Terraform; this module is what emulator mode and tests use, and
it names subscriptions as the local bus does (`{steps}-push`, `{dead-letter}-sub`, `{schedules}-push`).
A second call changes nothing; a subscription that drifted (endpoint, deadline, policies) is updated back.
Real Pub/Sub also needs its service agent to be allowed to publish to the dead-letter topic and to
subscribe to the steps subscription (IAM); the emulator has no IAM, Terraform grants those roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.api_core import exceptions as api_exceptions
from google.protobuf import duration_pb2, field_mask_pb2
from google.pubsub_v1 import types as pubsub_types

from common.bus.pubsub import publisher_client, subscriber_client, subscription_path, topic_path
from common.errors import ConfigurationError, DependencyUnavailable

_RECONCILED_FIELDS = ("ack_deadline_seconds", "push_config", "dead_letter_policy", "retry_policy")


class TopicNames(Protocol):
    """The topic names of a deployment (Settings has them)."""

    steps_topic: str
    schedules_topic: str
    dead_letter_topic: str


def subscription_names(names: TopicNames) -> dict[str, str]:
    """topic → the name of its one subscription."""
    return {
        names.steps_topic: f"{names.steps_topic}-push",
        names.dead_letter_topic: f"{names.dead_letter_topic}-sub",
        names.schedules_topic: f"{names.schedules_topic}-push",
    }


@dataclass
class Topology:
    """What ensure_topology made sure of: full resource paths, and which of them this call created."""

    topics: dict[str, str]
    subscriptions: dict[str, str]
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def subscription_spec(
    project: str,
    topic: str,
    name: str,
    endpoint: str | None,
    *,
    ack_deadline_seconds: int,
    minimum_backoff: float,
    maximum_backoff: float,
    dead_letter_topic: str | None = None,
    dead_letter_max_attempts: int = 5,
    push_service_account: str | None = None,
) -> pubsub_types.Subscription:
    """The desired subscription: push to `endpoint` (pull when None), with retry and dead-letter policies."""
    push_config = pubsub_types.PushConfig()
    if endpoint:
        push_config.push_endpoint = endpoint
        if push_service_account:  # authenticated push to a private function
            push_config.oidc_token = pubsub_types.PushConfig.OidcToken(
                service_account_email=push_service_account, audience=endpoint
            )
    spec = pubsub_types.Subscription(
        name=subscription_path(project, name),
        topic=topic_path(project, topic),
        push_config=push_config,
        ack_deadline_seconds=ack_deadline_seconds,
        retry_policy=pubsub_types.RetryPolicy(
            minimum_backoff=_duration(minimum_backoff), maximum_backoff=_duration(maximum_backoff)
        ),
    )
    if dead_letter_topic:
        spec.dead_letter_policy = pubsub_types.DeadLetterPolicy(
            dead_letter_topic=topic_path(project, dead_letter_topic),
            max_delivery_attempts=dead_letter_max_attempts,
        )
    return spec


def ensure_topology(
    project: str,
    names: TopicNames,
    push_endpoints: Mapping[str, str | None],
    *,
    dead_letter_max_attempts: int = 5,
    ack_deadline_seconds: int = 600,
    minimum_backoff: float = 10.0,
    maximum_backoff: float = 600.0,
    push_service_account: str | None = None,
    emulator_host: str | None = None,
) -> Topology:
    """Create (or leave as they are) the three topics and their subscriptions; return what exists.

    `push_endpoints` maps a topic name to the URL its subscription pushes to; a topic missing from it, or
    mapped to None, gets a pull subscription. Bounds are Pub/Sub's: 5–100 attempts, 10–600 s ack deadline,
    0–600 s backoff.
    """
    if not 5 <= dead_letter_max_attempts <= 100:
        raise ConfigurationError("dead_letter_max_attempts: Pub/Sub allows 5 to 100 delivery attempts")
    if not 10 <= ack_deadline_seconds <= 600:
        raise ConfigurationError("ack_deadline_seconds: Pub/Sub allows 10 to 600 seconds")
    if not 0 <= minimum_backoff <= maximum_backoff <= 600:
        raise ConfigurationError(
            "minimum_backoff/maximum_backoff: need 0 <= minimum <= maximum <= 600 seconds"
        )

    publisher = publisher_client(emulator_host)
    subscriber = subscriber_client(emulator_host)
    topology = Topology(topics={}, subscriptions={})
    try:
        for topic in (names.dead_letter_topic, names.steps_topic, names.schedules_topic):
            path = topic_path(project, topic)
            topology.topics[topic] = path
            if _create(lambda path=path: publisher.create_topic(name=path)):
                topology.created.append(path)
        for topic, name in subscription_names(names).items():
            spec = subscription_spec(
                project, topic, name, push_endpoints.get(topic),
                ack_deadline_seconds=ack_deadline_seconds,
                minimum_backoff=minimum_backoff,
                maximum_backoff=maximum_backoff,
                dead_letter_topic=names.dead_letter_topic if topic == names.steps_topic else None,
                dead_letter_max_attempts=dead_letter_max_attempts,
                push_service_account=push_service_account,
            )  # fmt: skip
            topology.subscriptions[topic] = spec.name
            if _create(lambda spec=spec: subscriber.create_subscription(request=spec)):
                topology.created.append(spec.name)
            elif _reconcile(subscriber, spec):
                topology.updated.append(spec.name)
    finally:
        publisher.transport.close()
        subscriber.close()
    return topology


def _create(call: Any) -> bool:
    """Run a create call; False when the resource already exists."""
    try:
        call()
        return True
    except api_exceptions.AlreadyExists:
        return False
    except api_exceptions.InvalidArgument as exc:
        raise ConfigurationError(f"Pub/Sub refused the topology: {exc.message}") from None
    except (api_exceptions.GoogleAPIError, OSError) as exc:
        raise DependencyUnavailable(f"Pub/Sub is unavailable while creating the topology: {exc}") from None


def _differs(name: str, current: pubsub_types.Subscription, spec: pubsub_types.Subscription) -> bool:
    if name == "push_config":  # Pub/Sub adds attributes (x-goog-version) of its own: compare what we set
        mine, theirs = spec.push_config, current.push_config
        return mine.push_endpoint != theirs.push_endpoint or mine.oidc_token != theirs.oidc_token
    return getattr(current, name) != getattr(spec, name)


def _reconcile(subscriber: Any, spec: pubsub_types.Subscription) -> bool:
    """Bring an existing subscription back to `spec`; True when something had to change."""
    try:
        current = subscriber.get_subscription(subscription=spec.name)
        if current.topic != spec.topic:
            raise ConfigurationError(
                f"subscription {spec.name} exists on {current.topic}, not {spec.topic}: delete it or rename the topic"
            )
        drifted = [name for name in _RECONCILED_FIELDS if _differs(name, current, spec)]
        if not drifted:
            return False
        subscriber.update_subscription(
            request={"subscription": spec, "update_mask": field_mask_pb2.FieldMask(paths=drifted)}
        )
        return True
    except api_exceptions.InvalidArgument as exc:
        raise ConfigurationError(f"Pub/Sub refused the topology: {exc.message}") from None
    except (api_exceptions.GoogleAPIError, OSError) as exc:
        raise DependencyUnavailable(f"Pub/Sub is unavailable while checking the topology: {exc}") from None
