"""Create the Pub/Sub topology Convergence runs on, idempotently (emulator mode, local set-ups, checks).

What to create is `common.bus.topology`'s declaration: its topics, one subscription each (named, pushing
and dead-lettering as declared), its ack deadline and retry policy. Production creates the same resources
with Terraform (tests/terraform compares the two); this module is what `local up`, emulator mode and tests
use. A second call changes nothing; a subscription that drifted (endpoint, deadline, policies) is updated
back. Real Pub/Sub also needs its service agent to be allowed to publish to the dead-letter topic and to
subscribe to the steps subscription (IAM); the emulator has no IAM, Terraform grants those roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.protobuf import duration_pb2, field_mask_pb2
from google.pubsub_v1 import types as pubsub_types

from common.bus.pubsub import publisher_client, subscriber_client, subscription_path, topic_path
from common.bus.topology import (
    PUBSUB_DELIVERY_ATTEMPTS,
    BusTopology,
    SubscriptionSpec,
    TopicNames,
    declare_topology,
)
from common.errors import ConfigurationError, DependencyUnavailable

_RECONCILED_FIELDS = ("ack_deadline_seconds", "push_config", "dead_letter_policy", "retry_policy")


@dataclass
class EnsuredTopology:
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
    topology: BusTopology,
    subscription: SubscriptionSpec,
    endpoint: str | None,
    *,
    push_service_account: str | None = None,
) -> pubsub_types.Subscription:
    """A declared subscription as Pub/Sub takes it: push to `endpoint` (pull when None), with the
    topology's ack deadline and retry policy and the subscription's dead-letter policy."""
    push_config = pubsub_types.PushConfig()
    if endpoint:
        push_config.push_endpoint = endpoint
        if push_service_account:  # authenticated push to a private function
            push_config.oidc_token = pubsub_types.PushConfig.OidcToken(
                service_account_email=push_service_account, audience=endpoint
            )
    retry = topology.retry
    spec = pubsub_types.Subscription(
        name=subscription_path(project, subscription.name),
        topic=topic_path(project, subscription.topic),
        push_config=push_config,
        ack_deadline_seconds=topology.ack_deadline_seconds,
        retry_policy=pubsub_types.RetryPolicy(
            minimum_backoff=_duration(retry.minimum_backoff_seconds),
            maximum_backoff=_duration(retry.maximum_backoff_seconds),
        ),
    )
    if subscription.dead_letter:
        spec.dead_letter_policy = pubsub_types.DeadLetterPolicy(
            dead_letter_topic=topic_path(project, subscription.dead_letter.topic),
            max_delivery_attempts=subscription.dead_letter.max_delivery_attempts,
        )
    return spec


def ensure_topology(
    project: str,
    topology: BusTopology | TopicNames,
    push_endpoints: Mapping[str, str | None],
    *,
    dead_letter_max_attempts: int | None = None,
    ack_deadline_seconds: int | None = None,
    minimum_backoff: float | None = None,
    maximum_backoff: float | None = None,
    push_service_account: str | None = None,
    emulator_host: str | None = None,
) -> EnsuredTopology:
    """Create (or leave as they are) the declared topics and subscriptions; return what exists.

    `topology` is the declaration, or settings to declare it from. `push_endpoints` maps a topic name to
    the URL its subscription pushes to; a topic missing from it, or mapped to None, gets a pull
    subscription. A delivery number given here replaces the declared one. Bounds are Pub/Sub's: 5–100
    attempts, 10–600 s ack deadline, 0–600 s backoff.
    """
    declared = topology if isinstance(topology, BusTopology) else declare_topology(topology)
    declared = declared.with_delivery(
        max_delivery_attempts=dead_letter_max_attempts, ack_deadline_seconds=ack_deadline_seconds,
        minimum_backoff=minimum_backoff, maximum_backoff=maximum_backoff,
    )  # fmt: skip
    retry = declared.retry
    if declared.max_delivery_attempts not in PUBSUB_DELIVERY_ATTEMPTS:
        raise ConfigurationError("dead_letter_max_attempts: Pub/Sub allows 5 to 100 delivery attempts")
    if not 10 <= declared.ack_deadline_seconds <= 600:
        raise ConfigurationError("ack_deadline_seconds: Pub/Sub allows 10 to 600 seconds")
    if not 0 <= retry.minimum_backoff_seconds <= retry.maximum_backoff_seconds <= 600:
        raise ConfigurationError(
            "minimum_backoff/maximum_backoff: need 0 <= minimum <= maximum <= 600 seconds"
        )

    publisher = publisher_client(emulator_host)
    subscriber = subscriber_client(emulator_host)
    ensured = EnsuredTopology(topics={}, subscriptions={})
    try:
        for topic in declared.topics:
            path = topic_path(project, topic)
            ensured.topics[topic] = path
            if _create(lambda path=path: publisher.create_topic(name=path)):
                ensured.created.append(path)
        for subscription in declared.subscriptions:
            spec = subscription_spec(
                project, declared, subscription, push_endpoints.get(subscription.topic),
                push_service_account=push_service_account,
            )  # fmt: skip
            ensured.subscriptions[subscription.topic] = spec.name
            if _create(lambda spec=spec: subscriber.create_subscription(request=spec)):
                ensured.created.append(spec.name)
            elif _reconcile(subscriber, spec):
                ensured.updated.append(spec.name)
    finally:
        publisher.transport.close()
        subscriber.close()
    return ensured


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
