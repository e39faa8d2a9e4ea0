"""The topology declaration (common.bus.topology) and the readers that must follow it exactly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.bus.local import LocalBus
from common.bus.topology import (
    ACK_DEADLINE_SECONDS,
    DeadLetterPolicy,
    RetryPolicy,
    declare_topology,
    subscription_names,
)
from common.errors import ConfigurationError
from common.settings import Settings
from common.wiring import build_local_bus
from convergence.local_stack import FUNCTIONS as LOCAL_FUNCTIONS
from convergence.pubsub_admin import ensure_topology

RENAMED = SimpleNamespace(
    steps_topic="s", schedules_topic="sched", dead_letter_topic="dead", step_max_attempts=7
)


def test_the_default_topology_is_three_topics_with_one_subscription_each() -> None:
    topology = declare_topology(Settings())
    assert topology.topics == ("convergence-steps-dlq", "convergence-steps", "convergence-schedules")
    assert topology.subscription_names() == {
        "convergence-steps": "convergence-steps-push",
        "convergence-steps-dlq": "convergence-steps-dlq-sub",
        "convergence-schedules": "convergence-schedules-push",
    }
    assert topology.ack_deadline_seconds == ACK_DEADLINE_SECONDS == 600
    assert topology.retry == RetryPolicy(10.0, 600.0)


def test_only_the_steps_subscription_dead_letters_after_step_max_attempts() -> None:
    topology = declare_topology(RENAMED)
    assert topology.subscription("s").dead_letter == DeadLetterPolicy("dead", 7)
    assert topology.subscription("dead").dead_letter is None
    assert topology.subscription("sched").dead_letter is None
    assert topology.max_delivery_attempts == 7


def test_names_without_attempts_get_the_settings_default() -> None:
    names = SimpleNamespace(steps_topic="s", schedules_topic="sched", dead_letter_topic="dead")
    assert declare_topology(names).max_delivery_attempts == Settings.model_fields["step_max_attempts"].default
    assert subscription_names(names) == {"s": "s-push", "dead": "dead-sub", "sched": "sched-push"}


def test_push_targets_are_cloudevent_functions_of_local_up() -> None:
    cloudevent = {name for name, _target, _source, signature in LOCAL_FUNCTIONS if signature == "cloudevent"}
    topology = declare_topology(Settings())
    assert {s.topic: s.function for s in topology.subscriptions} == {
        "convergence-steps": "step_execute",
        "convergence-steps-dlq": "step_execute",
        "convergence-schedules": "trigger_schedules",
    }
    assert {s.function for s in topology.subscriptions} <= cloudevent
    steps = topology.subscription("convergence-steps")
    assert steps.push_endpoint("http://h:1", "p") == "http://h:1/projects/p/topics/convergence-steps"


def test_delivery_numbers_can_be_replaced_and_kept_within_pubsub_limits() -> None:
    topology = declare_topology(SimpleNamespace(**vars(RENAMED) | {"step_max_attempts": 3}))
    assert topology.max_delivery_attempts == 3  # the local bus honours it as it is
    assert topology.within_pubsub_limits().max_delivery_attempts == 5
    changed = topology.with_delivery(ack_deadline_seconds=30, minimum_backoff=1, maximum_backoff=5)
    assert (changed.ack_deadline_seconds, changed.retry) == (30, RetryPolicy(1, 5))
    assert changed.max_delivery_attempts == 3 and changed.topics == topology.topics


def test_the_local_bus_subscribes_the_entry_points_as_declared() -> None:
    settings = Settings(
        steps_topic="s", schedules_topic="sched", dead_letter_topic="dead", step_max_attempts=3
    )
    bus = build_local_bus(settings)
    assert isinstance(bus, LocalBus)
    try:
        wired = {
            topic: [(s.name, s.handler.__name__, s.dead_letter_topic, s.max_attempts) for s in subs]
            for topic, subs in bus._subscriptions.items()
        }
    finally:
        bus.close()
    assert wired == {
        "s": [("s-push", "step_execute", "dead", 3)],
        "dead": [("dead-sub", "step_dead_letter", None, 5)],
        "sched": [("sched-push", "trigger_schedules", None, 5)],
    }
    declared = declare_topology(settings)
    assert {topic: subs[0][0] for topic, subs in wired.items()} == declared.subscription_names()
    assert {s.handler for s in declared.subscriptions} == {subs[0][1] for subs in wired.values()}


def test_the_pubsub_admin_refuses_declared_attempts_pubsub_cannot_honour() -> None:
    few = SimpleNamespace(**vars(RENAMED) | {"step_max_attempts": 3})
    with pytest.raises(ConfigurationError, match="dead_letter_max_attempts"):
        ensure_topology("any-project", declare_topology(few), {}, emulator_host="127.0.0.1:9")
