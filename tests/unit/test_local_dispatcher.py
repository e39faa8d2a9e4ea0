"""The embedded-mode dispatcher that `convergence serve` ticks: due schedules start without Cloud Scheduler.

Ticks are driven by an injected clock and sleep, so no test waits for real time to pass.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import sys
import threading
import types

import pytest

from common.errors import ConfigurationError, DependencyUnavailable
from convergence.local_dispatcher import LocalDispatcher, start_local_dispatcher

START = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)


class Ticks:
    """An injected clock (a minute later at each reading) and sleep that stops the dispatcher after `n`
    ticks; records every call to dispatch_due."""

    def __init__(self, ticks: int, outcomes: list | None = None) -> None:
        self.ticks = ticks
        self.outcomes = list(outcomes or [])
        self.calls: list[tuple[object, str | None, dt.datetime]] = []
        self.slept: list[float] = []
        self.readings = 0
        self.dispatcher: LocalDispatcher | None = None

    def clock(self) -> dt.datetime:
        self.readings += 1
        return START + dt.timedelta(minutes=self.readings)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if len(self.calls) >= self.ticks:
            assert self.dispatcher is not None
            self.dispatcher.stop()

    def dispatch(self, rt, cadence, now):
        self.calls.append((rt, cadence, now))
        outcome = self.outcomes.pop(0) if self.outcomes else {"started": 0}
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def run(self, rt, interval: float = 30.0) -> LocalDispatcher:
        self.dispatcher = LocalDispatcher(
            rt, interval, dispatch=self.dispatch, clock=self.clock, sleep=self.sleep
        )
        self.dispatcher.start()
        self.dispatcher._thread.join(timeout=60)  # the injected sleep stops it after the last tick
        assert not self.dispatcher.running
        return self.dispatcher


def test_every_tick_dispatches_all_cadences_due_at_the_clock_time(runtime):
    ticks = Ticks(3)
    ticks.run(runtime, interval=30.0)
    assert ticks.calls == [
        (runtime, None, START + dt.timedelta(minutes=1)),
        (runtime, None, START + dt.timedelta(minutes=2)),
        (runtime, None, START + dt.timedelta(minutes=3)),
    ]
    assert ticks.slept == [30.0, 30.0, 30.0, 30.0]  # it waits an interval before each tick


def test_a_failing_tick_is_logged_and_the_next_tick_still_runs(runtime, caplog):
    ticks = Ticks(
        3, outcomes=[RuntimeError("warehouse exploded"), DependencyUnavailable("bus down"), {"started": 2}]
    )
    with caplog.at_level(logging.INFO, logger="convergence.local_dispatcher"):
        dispatcher = ticks.run(runtime)
    assert len(ticks.calls) == 3 and dispatcher.ticks == 3
    failures = [record for record in caplog.records if "failed" in record.getMessage()]
    assert len(failures) == 2
    assert "warehouse exploded" in str(failures[0].exc_info[1])  # an unexpected error keeps its traceback
    assert "bus down" in failures[1].getMessage()
    assert any("'started': 2" in record.getMessage() for record in caplog.records)


def test_the_same_failure_tick_after_tick_is_logged_once_until_a_tick_succeeds(runtime, caplog):
    not_ready = ConfigurationError("the control dataset is not bootstrapped")
    ticks = Ticks(4, outcomes=[not_ready, not_ready, {"published": 1}, not_ready])
    with caplog.at_level(logging.INFO, logger="convergence.local_dispatcher"):
        ticks.run(runtime)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(ticks.calls) == 4 and len(warnings) == 2
    assert all("not bootstrapped" in r.getMessage() for r in warnings)


def test_a_tick_before_bootstrap_warns_through_the_real_schedules_service(runtime, caplog):
    dispatcher = LocalDispatcher(runtime, 60.0, clock=lambda: START)
    with caplog.at_level(logging.INFO, logger="convergence.local_dispatcher"):
        assert dispatcher.tick() is None
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "bootstrap" in warning.getMessage()


def test_stop_ends_the_wait_at_once_and_no_tick_runs_after_it(runtime):
    calls = []
    dispatcher = LocalDispatcher(runtime, 3600.0, dispatch=lambda *args: calls.append(args) or {}).start()
    assert dispatcher.running
    dispatcher.stop()
    assert not dispatcher.running
    assert calls == []


def test_stop_waits_for_the_tick_in_progress(runtime):
    entered, release, finished = threading.Event(), threading.Event(), []

    def slow_dispatch(rt, cadence, now):
        entered.set()
        release.wait(60)
        finished.append(now)
        return {}

    dispatcher = LocalDispatcher(runtime, 1.0, dispatch=slow_dispatch, sleep=lambda seconds: None).start()
    assert entered.wait(60)
    dispatcher.request_stop()
    release.set()
    dispatcher.stop()
    assert len(finished) == 1 and not dispatcher.running


def test_the_default_tick_calls_dispatch_due_of_the_schedules_service(runtime, monkeypatch):
    calls = []
    schedules = types.ModuleType("common.services.dispatcher")
    schedules.dispatch_due = lambda rt, cadence, now: calls.append((rt, cadence, now)) or {"started": 1}
    monkeypatch.setitem(sys.modules, "common.services.dispatcher", schedules)
    dispatcher = LocalDispatcher(runtime, 60.0, clock=lambda: START)
    assert dispatcher.tick() == {"started": 1}
    assert calls == [(runtime, None, START)]


def test_serve_starts_the_local_dispatcher_in_embedded_mode(runtime, monkeypatch, caplog):
    monkeypatch.setattr(
        runtime, "settings", runtime.settings.model_copy(update={"dispatcher_interval_seconds": 5.0})
    )
    with caplog.at_level(logging.INFO, logger="convergence.local_dispatcher"):
        dispatcher = start_local_dispatcher(runtime, dispatch=lambda *args: {})
    try:
        assert dispatcher is not None and dispatcher.running
        assert dispatcher.interval == 5.0 and dispatcher.rt is runtime
        assert "local dispatcher" in caplog.text and "bus=local" in caplog.text
    finally:
        dispatcher.stop()
    assert not dispatcher.running


def test_serve_leaves_ticking_to_cloud_scheduler_with_pubsub(runtime, caplog):
    pubsub = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"convergence_bus": "pubsub"})
    )
    with caplog.at_level(logging.INFO, logger="convergence.local_dispatcher"):
        assert start_local_dispatcher(pubsub) is None
    assert "Cloud Scheduler" in caplog.text and "no local dispatcher" in caplog.text


def test_a_non_positive_interval_is_refused(runtime):
    with pytest.raises(ValueError, match="positive"):
        LocalDispatcher(runtime, 0)
