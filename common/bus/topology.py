"""The Pub/Sub topology, declared once: topics, subscriptions, push targets, dead letters and delivery policy.

    steps topic        ──push──▶ step_execute       (after max_delivery_attempts: the dead-letter topic)
    dead-letter topic  ──push──▶ step_execute       (one process: the step_dead_letter entry point)
    schedules topic    ──push──▶ trigger_schedules

Topic names and attempts come from Settings (STEPS_TOPIC, SCHEDULES_TOPIC, DEAD_LETTER_TOPIC,
STEP_MAX_ATTEMPTS); the ack deadline and the retry backoff are the constants below. Readers:
`common.wiring.build_local_bus` (the local bus), `convergence local up` and the Pub/Sub admin
(`convergence.pubsub_admin.ensure_topology`); tests/terraform compares terraform/ with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from common.settings import Settings

#: Every subscription's ack deadline: Pub/Sub's maximum, above the longest step (540 s), so a push still
#: running is not redelivered.
ACK_DEADLINE_SECONDS = 600
MINIMUM_BACKOFF_SECONDS = 10.0
MAXIMUM_BACKOFF_SECONDS = 600.0
#: Deliveries Pub/Sub allows a dead-letter policy (the local bus takes any positive number).
PUBSUB_DELIVERY_ATTEMPTS = range(5, 101)
DEFAULT_STEP_MAX_ATTEMPTS: int = Settings.model_fields["step_max_attempts"].default


class TopicNames(Protocol):
    """The topic names of a deployment (Settings has them, and step_max_attempts)."""

    steps_topic: str
    schedules_topic: str
    dead_letter_topic: str


@dataclass(frozen=True)
class DeadLetterPolicy:
    """After `max_delivery_attempts` failed deliveries a message is forwarded to `topic`."""

    topic: str
    max_delivery_attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between redeliveries of a message its push endpoint refused."""

    minimum_backoff_seconds: float = MINIMUM_BACKOFF_SECONDS
    maximum_backoff_seconds: float = MAXIMUM_BACKOFF_SECONDS


@dataclass(frozen=True)
class SubscriptionSpec:
    """One subscription: the topic it reads, whom it pushes to, and its dead-letter policy if any.

    `function` is the deployed function (functions/<source>, a `local up` process) whose URL the push reaches;
    `handler` is the CloudEvent entry point of common.wiring that serves it where one process runs everything.
    """

    name: str
    topic: str
    function: str
    handler: str
    dead_letter: DeadLetterPolicy | None = None

    def push_endpoint(self, function_url: str, project: str) -> str:
        """The push URL on `function_url`: its path names the topic, as in terraform/modules/pubsub."""
        return f"{function_url}/projects/{project}/topics/{self.topic}"


@dataclass(frozen=True)
class BusTopology:
    """Topics (in creation order: the dead-letter topic first), their subscriptions and delivery policy."""

    topics: tuple[str, ...]
    subscriptions: tuple[SubscriptionSpec, ...]
    ack_deadline_seconds: int = ACK_DEADLINE_SECONDS
    retry: RetryPolicy = RetryPolicy()

    def subscription(self, topic: str) -> SubscriptionSpec:
        """The one subscription of `topic`."""
        (found,) = (s for s in self.subscriptions if s.topic == topic)
        return found

    def subscription_names(self) -> dict[str, str]:
        """topic → the name of its one subscription."""
        return {s.topic: s.name for s in self.subscriptions}

    @property
    def max_delivery_attempts(self) -> int:
        """Deliveries of a step message before it is dead-lettered."""
        return next(s.dead_letter.max_delivery_attempts for s in self.subscriptions if s.dead_letter)

    def with_delivery(
        self,
        *,
        max_delivery_attempts: int | None = None,
        ack_deadline_seconds: int | None = None,
        minimum_backoff: float | None = None,
        maximum_backoff: float | None = None,
    ) -> BusTopology:
        """The same topology with some delivery numbers replaced (None keeps the declared one)."""
        subscriptions = self.subscriptions
        if max_delivery_attempts is not None:
            subscriptions = tuple(
                replace(s, dead_letter=replace(s.dead_letter, max_delivery_attempts=max_delivery_attempts))
                if s.dead_letter else s
                for s in subscriptions
            )  # fmt: skip
        retry = RetryPolicy(
            self.retry.minimum_backoff_seconds if minimum_backoff is None else minimum_backoff,
            self.retry.maximum_backoff_seconds if maximum_backoff is None else maximum_backoff,
        )
        deadline = self.ack_deadline_seconds if ack_deadline_seconds is None else ack_deadline_seconds
        return replace(self, subscriptions=subscriptions, ack_deadline_seconds=deadline, retry=retry)

    def within_pubsub_limits(self) -> BusTopology:
        """Attempts raised or lowered into the 5–100 Pub/Sub allows (the local bus honours fewer)."""
        low, high = PUBSUB_DELIVERY_ATTEMPTS[0], PUBSUB_DELIVERY_ATTEMPTS[-1]
        return self.with_delivery(max_delivery_attempts=min(high, max(low, self.max_delivery_attempts)))


def declare_topology(names: TopicNames) -> BusTopology:
    """The topology of a deployment from its settings (a `names` without step_max_attempts gets the default)."""
    attempts = getattr(names, "step_max_attempts", DEFAULT_STEP_MAX_ATTEMPTS)
    steps, dead_letter, schedules = names.steps_topic, names.dead_letter_topic, names.schedules_topic
    return BusTopology(
        topics=(dead_letter, steps, schedules),
        subscriptions=(
            SubscriptionSpec(f"{steps}-push", steps, "step_execute", "step_execute",
                             DeadLetterPolicy(dead_letter, attempts)),
            SubscriptionSpec(f"{dead_letter}-sub", dead_letter, "step_execute", "step_dead_letter"),
            SubscriptionSpec(f"{schedules}-push", schedules, "trigger_schedules", "trigger_schedules"),
        ),
    )  # fmt: skip


def subscription_names(names: TopicNames) -> dict[str, str]:
    """topic → the name of its one subscription, as every reader of the topology names it."""
    return declare_topology(names).subscription_names()
