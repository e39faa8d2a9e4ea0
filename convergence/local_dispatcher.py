"""The embedded-mode dispatcher: what the Cloud Scheduler dispatcher jobs do when there is no Cloud Scheduler.

Deployed, one Cloud Scheduler job per cadence publishes a dispatch message and the trigger function starts
the schedules that are due. With the local bus (`CONVERGENCE_BUS=local`) nothing ticks, so `convergence
serve` runs this daemon thread: every DISPATCHER_INTERVAL_SECONDS it asks
`common.services.dispatcher.dispatch_due` to start every schedule of any cadence that is due by now. A tick
that fails is logged and the next one runs as planned; stopping waits for a tick in progress.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from common.errors import ConvergenceError
from common.runtime import Runtime
from common.types import utcnow

log = logging.getLogger(__name__)

Dispatch = Callable[[Runtime, str | None, dt.datetime], dict]
STOP_TIMEOUT_SECONDS = 60.0


def _dispatch_due(rt: Runtime, cadence: str | None, now: dt.datetime) -> dict:
    """common.services.dispatcher.dispatch_due, imported at the tick so this module loads without it."""
    from common.services.dispatcher import dispatch_due

    return dispatch_due(rt, cadence, now)


def _anything_started(outcome: Any) -> bool:
    """Whether a tick's outcome reports work: messages published, else any non-zero count or non-empty list."""
    if isinstance(outcome, dict) and "published" in outcome:
        return bool(outcome["published"])
    if isinstance(outcome, dict):
        return any(_anything_started(value) for value in outcome.values())
    if isinstance(outcome, list | tuple | set):
        return bool(outcome)
    return isinstance(outcome, int | float) and not isinstance(outcome, bool) and outcome != 0


class LocalDispatcher:
    """Ticks `dispatch` every `interval` seconds on a daemon thread until stopped.

    `clock` and `sleep` are injectable so tests can drive ticks without waiting; `sleep(seconds)` must
    return early once `stop()` is called (the default waits on the stop event).
    """

    def __init__(
        self,
        rt: Runtime,
        interval: float,
        *,
        dispatch: Dispatch | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("the dispatcher interval must be positive")
        self.rt = rt
        self.interval = interval
        self.ticks = 0
        self._dispatch = dispatch or _dispatch_due
        self._clock = clock
        self._stopped = threading.Event()
        self._sleep = sleep or self._stopped.wait
        self._thread: threading.Thread | None = None
        self._last_failure: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self) -> dict | None:
        """Start whatever is due now; a failure is logged (never raised) so the loop keeps ticking.

        The same failure tick after tick (e.g. not bootstrapped yet) is logged once, then at debug level
        until a tick succeeds or the failure changes.
        """
        now = self._clock()
        self.ticks += 1
        try:
            outcome = self._dispatch(self.rt, None, now)
        except ConvergenceError as exc:
            failure = f"{type(exc).__name__}: {exc.message}"
            if self._first_time(failure, now):
                log.warning("local dispatcher tick at %s failed: %s", now.isoformat(), failure)
            return None
        except Exception as exc:
            failure = f"{type(exc).__name__}: {exc}"
            if self._first_time(failure, now):
                log.exception("local dispatcher tick at %s failed: %s", now.isoformat(), failure)
            return None
        self._last_failure = None
        if _anything_started(outcome):
            log.info("local dispatcher tick at %s: %s", now.isoformat(), outcome)
        else:
            log.debug("local dispatcher tick at %s: nothing due", now.isoformat())
        return outcome

    def _first_time(self, failure: str, now: dt.datetime) -> bool:
        """Whether this failure differs from the previous tick's (a repeat is logged at debug level only)."""
        repeat = failure == self._last_failure
        self._last_failure = failure
        if repeat:
            log.debug("local dispatcher tick at %s failed again: %s", now.isoformat(), failure)
        return not repeat

    def _loop(self) -> None:
        # The first tick comes one interval after start, as a dispatcher job's first tick comes on its cron.
        while not self._stopped.is_set():
            self._sleep(self.interval)
            if self._stopped.is_set():
                break
            self.tick()

    def start(self) -> LocalDispatcher:
        if self.running:
            return self
        self._stopped.clear()
        self._thread = threading.Thread(target=self._loop, name="local-dispatcher", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to end after the tick in progress, without waiting for it."""
        self._stopped.set()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Ask the loop to end and wait (up to `timeout`) for a tick in progress to finish."""
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("local dispatcher still busy with a tick after %.0f s; leaving it", timeout)


def start_local_dispatcher(rt: Runtime, **options: Any) -> LocalDispatcher | None:
    """What `convergence serve` runs: the local dispatcher with the local bus, nothing with Pub/Sub.

    With Pub/Sub the deployed Cloud Scheduler dispatcher jobs do the ticking; a second ticker here would
    only start the same slots twice.
    """
    settings = rt.settings
    if settings.convergence_bus != "local":
        log.info(
            "bus=%s: schedules are ticked by the Cloud Scheduler dispatcher jobs; no local dispatcher",
            settings.convergence_bus,
        )
        return None
    dispatcher = LocalDispatcher(rt, settings.dispatcher_interval_seconds, **options).start()
    log.info(
        "bus=local: local dispatcher starts due schedules every %g s (embedded mode)",
        settings.dispatcher_interval_seconds,
    )
    return dispatcher
