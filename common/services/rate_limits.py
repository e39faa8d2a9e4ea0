"""Per-tenant rate limits of the routes a tenant's key calls, per UTC minute: writes (run triggers, uploads,
integration and settings changes: every method but GET) RATE_LIMIT_PER_MINUTE (default 50); reads (run status,
lists, data pages) a separate, generous READ_RATE_LIMIT_PER_MINUTE (default 1,000), so polling a run never
uses up the writes of a minute, and a runaway poller is still stopped.

The read limit is counted in each instance alone (it guards an instance against one tenant's flood; N instances
admit at most N x the limit). The write limit, the one that guards the warehouse and the bus, is the one below.

Windows are fixed UTC minutes. A tenant's request is admitted while the requests admitted for it in the
current minute are fewer than the limit; the next one is refused with 429 `rate_limited` and Retry-After =
the seconds left in the minute. Refused requests do not count. A client may send up to the limit at the end
of one minute and again at the start of the next (the usual price of fixed windows). Requests refused as
invalid input (400, 413, 415, 422) are given back: they cost no warehouse or bus work.

**Embedded mode** (one process, DuckDB): the count is kept in this process under a lock, so the limit is
exact.

**gcp and emulators modes** (BigQuery, many function instances): counting every request in the warehouse
would cost a DML statement per request, and BigQuery admits only a few mutating statements per table at a
time. So each instance counts in memory and, at most every SYNC_INTERVAL_SECONDS (10 s) and only while it
serves pipeline requests, appends what it admitted since the last sync to `org_rate_windows` (one append of
a row per tenant and minute: the Storage Write API on BigQuery, no job) and reads the other instances' totals of the current minute (one query). A
request is admitted while `this instance's count + the others' totals as last read` is below the limit. The
sync runs inside the request that is due for it (at most one request per instance every 10 s pays one append
and one query; the others never wait for the warehouse), because Cloud Functions gen2 gives an instance CPU
only while it serves requests. A failed sync is logged and retried with the next one (the instance then
limits on its own counts alone).

The bound this gives: in one minute, every instance admits at most `limit` requests of a tenant by its own
count, so N instances admit at most **N x limit** in the worst case (all of them bursting in the same
10 seconds, before any sync). Where a tenant's requests are spread over the minute, the excess over the
limit is at most what the other instances admitted in the last sync interval plus the one in flight
(about limit/6 per other instance for an even spread). An idle instance writes nothing; one that serves
requests appends at most once per 10 s, and deletes rows older than two days once an hour (the only
mutating statement on this shared table: one an hour per instance).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from common.errors import ConvergenceError, RateLimited
from common.metadata import rate_windows
from common.runtime import Runtime

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
SYNC_INTERVAL_SECONDS = 10.0
CLEANUP_INTERVAL_SECONDS = 3600.0
RETENTION = dt.timedelta(days=2)
CACHE_KEY = "rate_limiter"
NOT_COUNTED = frozenset({400, 413, 415, 422})  # refused as invalid input, before any warehouse or bus work

Clock = Callable[[], float]
Runner = Callable[[Callable[[], None]], None]


LIMIT_NAMES = {"write": "rate_limit_per_minute", "read": "read_rate_limit_per_minute"}


def _seconds_left(now: float) -> int:
    window = int(now // WINDOW_SECONDS)
    return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))


def _window_start(window: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(window * WINDOW_SECONDS, dt.UTC)


class WarehouseWindows:
    """The counts of all instances, shared through the control table `org_rate_windows`."""

    def __init__(self, rt: Runtime, instance_id: str | None = None) -> None:
        self.rt = rt
        self.instance_id = instance_id or uuid.uuid4().hex

    def append(self, hits: dict[tuple[int, str], int], recorded_at: dt.datetime) -> None:
        """Add this instance's admitted requests per (window, tenant): appends only, a row per pair."""
        rows = [
            rate_windows.WindowHits(tenant, _window_start(window), count)
            for (window, tenant), count in sorted(hits.items())
        ]
        rate_windows.append(self.rt, self.instance_id, rows, recorded_at=recorded_at)

    def others(self, window: int) -> dict[str, int]:
        """What every other instance has appended for the window, per tenant."""
        return rate_windows.hits_of_others(self.rt, self.instance_id, _window_start(window))

    def forget_before(self, moment: dt.datetime) -> None:
        """Delete windows older than `moment`."""
        rate_windows.delete_before(self.rt, moment)


def _in_request(work: Callable[[], None]) -> None:
    # Inside the request that is due for it: Cloud Functions gen2 gives an instance CPU only while it serves
    # a request, so bookkeeping left to a background thread would stall between requests.
    try:
        work()
    except Exception:  # a sync must never fail the request; the next one tries again
        log.exception("rate-limit sync failed")


class RateLimiter:
    """Fixed one-minute windows per tenant; shared through `store` across instances when one is given."""

    def __init__(
        self,
        limit: int,
        *,
        kind: str = "write",
        now: Clock = time.time,
        store: WarehouseWindows | None = None,
        sync_interval: float = SYNC_INTERVAL_SECONDS,
        run_sync: Runner = _in_request,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.kind = kind
        self._now = now
        self._store = store
        self._sync_interval = sync_interval
        self._run_sync = run_sync
        self._lock = threading.Lock()
        self._window = -1
        self._local: Counter[str] = Counter()  # admitted here in the current window
        self._others: dict[str, int] = {}  # the other instances' totals of the current window, as last read
        self._unsent: Counter[tuple[int, str]] = Counter()  # admitted here, not yet appended to the store
        self._last_sync = -math.inf
        self._last_cleanup = -math.inf
        self._syncing = False

    @property
    def shared(self) -> bool:
        """Whether counts are shared with other instances through the warehouse."""
        return self._store is not None

    def check(self, tenant: str) -> int:
        """Count one request of `tenant` and return its window; 429 when its minute is used up."""
        window, work = self._count(tenant)
        if work is not None:
            try:
                self._run_sync(work)
            except Exception:
                log.exception("rate-limit sync could not start")
                with self._lock:
                    self._syncing = False
        return window

    def _count(self, tenant: str) -> tuple[int, Callable[[], None] | None]:
        with self._lock:
            now = self._now()
            window = int(now // WINDOW_SECONDS)
            self._roll(window)
            used = self._local[tenant] + self._others.get(tenant, 0)
            if used >= self.limit:
                retry_after = _seconds_left(now)
                setting = LIMIT_NAMES.get(self.kind, self.kind)
                raise RateLimited(
                    f"{tenant} may make {self.limit} {self.kind} requests per minute; try again in {retry_after} s",
                    code="rate_limited", retry_after=retry_after, limit=setting, limit_value=self.limit,
                )  # fmt: skip
            self._local[tenant] += 1
            if self._store is None:
                return window, None
            self._unsent[(window, tenant)] += 1
            if self._syncing or now - self._last_sync < self._sync_interval:
                return window, None
            self._syncing = True
            return window, self._take_work(now)

    def refund(self, tenant: str, window: int) -> None:
        """Uncount one request of `tenant` counted in `window` (nothing once that window is over)."""
        with self._lock:
            if window == self._window and self._local[tenant] > 0:
                self._local[tenant] -= 1
            if self._unsent[(window, tenant)] > 0:
                self._unsent[(window, tenant)] -= 1

    def seconds_left_in_window(self) -> int:
        """Whole seconds until the current window ends (at least 1): the Retry-After of a refusal now."""
        return _seconds_left(self._now())

    def used(self, tenant: str) -> int:
        """Requests of `tenant` counted in the current window (this instance's and the others' as read)."""
        with self._lock:
            self._roll(int(self._now() // WINDOW_SECONDS))
            return self._local[tenant] + self._others.get(tenant, 0)

    def sync(self) -> None:
        """Append this instance's counts and read the others' now (normally left to the request path)."""
        with self._lock:
            if self._store is None or self._syncing:
                return
            self._syncing = True
            work = self._take_work(self._now())
        work()

    def _roll(self, window: int) -> None:
        # Called with the lock held: a new minute starts with nothing counted.
        if window > self._window:
            self._window, self._local, self._others = window, Counter(), {}

    def _take_work(self, now: float) -> Callable[[], None]:
        # Called with the lock held: what to send, and which window to read, as of `now`.
        self._last_sync = now
        unsent, self._unsent = self._unsent, Counter()
        window = int(now // WINDOW_SECONDS)
        cleanup = now - self._last_cleanup >= CLEANUP_INTERVAL_SECONDS
        if cleanup:
            self._last_cleanup = now
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        return lambda: self._exchange(dict(unsent), window, moment, cleanup)

    def _exchange(
        self, unsent: dict[tuple[int, str], int], window: int, moment: dt.datetime, cleanup: bool
    ) -> None:
        store = self._store
        assert store is not None
        try:
            try:
                if unsent:
                    store.append(unsent, moment)
            except ConvergenceError as exc:
                log.warning("rate-limit counts not shared (kept for the next sync): %s", exc.message)
                with self._lock:  # only what can still matter: this minute and the one before
                    self._unsent.update({key: n for key, n in unsent.items() if key[0] >= self._window - 1})
                return
            try:
                others = store.others(window)
            except ConvergenceError as exc:
                log.warning("rate-limit counts of other instances not read: %s", exc.message)
                return
            with self._lock:
                self._roll(window)
                if self._window == window:
                    self._others = others
            if cleanup:
                try:
                    store.forget_before(moment - RETENTION)
                except ConvergenceError as exc:
                    log.warning("old rate-limit windows not deleted: %s", exc.message)
        finally:
            with self._lock:
                self._syncing = False


_create_lock = threading.Lock()


def cached_limiter(rt: Runtime, kind: str, build: Callable[[], RateLimiter]) -> RateLimiter:
    """This instance's limiter of `kind`, built once by `build` (kept in the runtime's caches)."""
    key = f"{CACHE_KEY}:{kind}"
    limiter = rt.caches.get(key)
    if limiter is None:
        with _create_lock:
            limiter = rt.caches.get(key)
            if limiter is None:
                limiter = rt.caches[key] = build()
    return limiter


def shared_store(rt: Runtime) -> WarehouseWindows | None:
    """Where instances share their counts: the warehouse on BigQuery; nowhere in one embedded process."""
    return WarehouseWindows(rt) if rt.warehouse.name == "bigquery" else None


def limiter_for(rt: Runtime, kind: str = "write") -> RateLimiter:
    """This instance's limiter of `kind`: writes shared through the warehouse on BigQuery, reads per instance."""
    if kind == "write":
        return cached_limiter(
            rt, kind, lambda: RateLimiter(rt.settings.rate_limit_per_minute, store=shared_store(rt))
        )
    return cached_limiter(rt, kind, lambda: RateLimiter(rt.settings.read_rate_limit_per_minute, kind="read"))


def install(rt: Runtime, limiter: RateLimiter) -> None:
    """Use `limiter` for this runtime's requests of its kind (e.g. one with another clock)."""
    rt.caches[f"{CACHE_KEY}:{limiter.kind}"] = limiter


def kind_of(method: str) -> str:
    """Which limit a request counts against: GET and HEAD read, every other method writes."""
    return "read" if method.upper() in ("GET", "HEAD") else "write"


@contextmanager
def counted(rt: Runtime, tenant: str, kind: str = "write") -> Iterator[None]:
    """Count one request of `tenant` around its handling; 429 `rate_limited` when over.

    A request refused as invalid input (NOT_COUNTED statuses) is uncounted again: it cost the platform no
    warehouse or bus work, and a client correcting its request should not find its minute spent on it.
    """
    limiter = limiter_for(rt, kind)
    window = limiter.check(tenant)
    try:
        yield
    except ConvergenceError as exc:
        if exc.status in NOT_COUNTED:
            limiter.refund(tenant, window)
        raise
