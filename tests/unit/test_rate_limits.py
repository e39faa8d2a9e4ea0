"""The rate limiter on its own: fixed UTC minutes, exact in one process, shared through a warehouse table.

The clock is injected, so no test sleeps. Sharing is exercised with two limiters standing for two function
instances over one real DuckDB warehouse holding the control table `org_rate_windows`; their syncs run in
the test's thread.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest

from common.errors import RateLimited
from common.metadata.schemas import load_schema
from common.runtime import Runtime
from common.services.rate_limits import RateLimiter, WarehouseWindows, limiter_for
from common.settings import get_settings
from common.warehouse.sql import table_ref
from common.wiring import build_runtime

MINUTE = 1_700_000_040  # a timestamp at the start of a UTC minute


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def right_away(work):
    work()


def admitted(limiter: RateLimiter, tenant: str, attempts: int) -> int:
    count = 0
    for _ in range(attempts):
        try:
            limiter.check(tenant)
            count += 1
        except RateLimited:
            pass
    return count


@pytest.fixture
def shared_runtime() -> Iterator[Runtime]:
    """An embedded runtime whose control dataset holds org_rate_windows."""
    rt = build_runtime(get_settings())
    rt.warehouse.create_dataset(rt.settings.control_dataset)
    rt.warehouse.create_table(rt.settings.control_dataset, load_schema("control", "org_rate_windows"))
    yield rt
    rt.close()


def instance(rt: Runtime, clock: Clock, limit: int = 50) -> RateLimiter:
    return RateLimiter(limit, now=clock, store=WarehouseWindows(rt), run_sync=right_away)


# -- one process -----------------------------------------------------------------------------------


def test_the_request_after_the_limit_is_refused_until_the_next_minute():
    clock = Clock(MINUTE + 20.25)
    limiter = RateLimiter(50, now=clock)
    assert admitted(limiter, "acme", 50) == 50
    with pytest.raises(RateLimited) as refused:
        limiter.check("acme")
    assert refused.value.code == "rate_limited"
    assert refused.value.details["retry_after"] == 40
    assert "50 write requests per minute" in refused.value.message
    clock.now = MINUTE + 59.9
    assert admitted(limiter, "acme", 1) == 0
    clock.now = MINUTE + 60
    assert admitted(limiter, "acme", 51) == 50


def test_each_tenant_has_a_minute_of_its_own():
    limiter = RateLimiter(3, now=Clock(MINUTE))
    assert admitted(limiter, "acme", 5) == 3
    assert admitted(limiter, "globex", 5) == 3
    assert limiter.used("acme") == limiter.used("globex") == 3


def test_racing_threads_get_exactly_the_limit():
    limiter = RateLimiter(50, now=Clock(MINUTE))
    results: list[int] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        results.append(admitted(limiter, "acme", 25))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 50


def test_a_refunded_request_frees_its_place_only_in_its_own_minute():
    clock = Clock(MINUTE)
    limiter = RateLimiter(2, now=clock)
    window = limiter.check("acme")
    limiter.check("acme")
    limiter.refund("acme", window)
    assert admitted(limiter, "acme", 2) == 1
    clock.now += 60
    limiter.check("acme")
    limiter.refund("acme", window)
    assert limiter.used("acme") == 1


def test_embedded_mode_counts_in_process_with_the_configured_limit(runtime):
    limiter = limiter_for(runtime)
    assert limiter is limiter_for(runtime)
    assert limiter.limit == runtime.settings.rate_limit_per_minute == 50
    assert not limiter.shared


# -- many instances --------------------------------------------------------------------------------


def test_an_instance_counts_what_the_others_admitted_once_they_synced(shared_runtime):
    clock = Clock(MINUTE + 5)
    first, second = instance(shared_runtime, clock), instance(shared_runtime, clock)
    assert admitted(first, "acme", 30) == 30
    first.sync()
    second.sync()
    assert second.used("acme") == 30
    assert admitted(second, "acme", 30) == 20
    second.sync()
    first.sync()
    assert admitted(first, "acme", 5) == 0
    assert admitted(first, "globex", 5) == 5


def test_without_a_sync_each_instance_admits_at_most_the_limit(shared_runtime):
    """The documented worst case: N instances bursting before any sync admit N x limit, never more."""
    clock = Clock(MINUTE)
    instances = [
        RateLimiter(10, now=clock, store=WarehouseWindows(shared_runtime), run_sync=lambda work: None)
        for _ in range(3)
    ]
    assert [admitted(limiter, "acme", 15) for limiter in instances] == [10, 10, 10]


def test_counts_of_a_past_minute_do_not_limit_the_next(shared_runtime):
    clock = Clock(MINUTE)
    first, second = instance(shared_runtime, clock, limit=5), instance(shared_runtime, clock, limit=5)
    assert admitted(first, "acme", 5) == 5
    first.sync()
    clock.now += 60
    second.sync()
    assert admitted(second, "acme", 6) == 5


def test_counts_that_could_not_be_shared_are_sent_with_the_next_sync():
    rt = build_runtime(get_settings())
    try:
        clock = Clock(MINUTE)
        first = instance(rt, clock)
        assert admitted(first, "acme", 7) == 7  # no control table yet: every sync fails, nothing is lost
        rt.warehouse.create_dataset(rt.settings.control_dataset)
        rt.warehouse.create_table(rt.settings.control_dataset, load_schema("control", "org_rate_windows"))
        first.sync()
        second = instance(rt, clock)
        second.sync()
        assert second.used("acme") == 7
    finally:
        rt.close()


def test_windows_older_than_two_days_are_deleted(shared_runtime):
    old = Clock(MINUTE)
    stale = instance(shared_runtime, old)
    admitted(stale, "acme", 3)
    stale.sync()
    table = table_ref(shared_runtime.settings.control_dataset, "org_rate_windows")
    assert shared_runtime.warehouse.query(f"SELECT SUM(hits) AS n FROM {table}")[0]["n"] == 3
    later = Clock(MINUTE + dt.timedelta(days=3).total_seconds())
    fresh = instance(shared_runtime, later)
    admitted(fresh, "acme", 1)
    rows = shared_runtime.warehouse.query(f"SELECT window_start, hits FROM {table}")
    assert rows == [{"window_start": dt.datetime.fromtimestamp(later.now, dt.UTC), "hits": 1}]


def test_by_default_the_shared_bookkeeping_is_done_inside_the_request_due_for_it(shared_runtime):
    """No background thread (Cloud Functions gives an instance CPU only while it serves a request): the
    request that is due for a sync has appended its counts by the time it is admitted; the next ones in the
    same 10 s do no warehouse work at all."""
    clock = Clock(MINUTE + 1)
    threads_before = threading.active_count()
    first = RateLimiter(50, now=clock, store=WarehouseWindows(shared_runtime))
    first.check("acme")
    assert threading.active_count() == threads_before
    table = table_ref(shared_runtime.settings.control_dataset, "org_rate_windows")
    total = f"SELECT COALESCE(SUM(hits), 0) AS n FROM {table}"
    assert shared_runtime.warehouse.query(total)[0]["n"] == 1
    clock.now += 5
    assert admitted(first, "acme", 4) == 4
    assert shared_runtime.warehouse.query(total)[0]["n"] == 1  # inside the 10 s: nothing written
    clock.now += 5
    first.check("acme")
    assert shared_runtime.warehouse.query(total)[0]["n"] == 6
