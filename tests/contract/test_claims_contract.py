"""The Claims port's contract, run against every adapter in CLAIMS_FACTORIES (files, Cloud Storage).

Each `claims_store()` call is another instance with its own client over the same store, as function
instances are. Races are run for real: threads released together by a barrier, 50 keys each.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from common.claims.base import Claim, Claims

RACERS = 6
ROUNDS = 50


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def race(instances: list[Claims], attempt) -> list:
    """Run `attempt(instance)` in one thread per instance, all released at once; their results."""
    barrier = threading.Barrier(len(instances))
    results: list = [None] * len(instances)

    def run(index: int) -> None:
        barrier.wait()
        results[index] = attempt(instances[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(instances))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_one_holder_at_a_time_and_the_key_is_free_again_once_released(claims_store) -> None:
    first, second = claims_store(), claims_store()
    claim = first.acquire("start/acme/abc", lease=60)
    assert claim is not None and claim.record.holder == first.holder
    assert second.acquire("start/acme/abc", lease=60) is None
    assert first.acquire("start/acme/abc", lease=60) is None  # not re-entrant either
    assert second.acquire("start/acme/other", lease=60) is not None  # keys are independent
    assert first.release(claim)
    taken = second.acquire("start/acme/abc", lease=60)
    assert taken is not None and second.inspect("start/acme/abc").holder == second.holder


def test_a_done_key_is_never_taken_again_and_tells_its_result(claims_store) -> None:
    first, second = claims_store(), claims_store()
    claim = first.acquire("idempotency/acme/key-1", lease=60)
    assert first.complete(claim, result="run-123")
    assert second.acquire("idempotency/acme/key-1", lease=60) is None
    record = second.inspect("idempotency/acme/key-1")
    assert (record.state, record.result) == ("done", "run-123")
    assert second.wait_done("idempotency/acme/key-1", timeout=1).result == "run-123"
    assert second.inspect("never/claimed") is None


def test_a_claim_held_past_its_lease_is_taken_over_and_its_old_holder_can_change_nothing(claims_store) -> None:
    clock = Clock()
    slow, other = claims_store(now=clock), claims_store(now=clock)
    claim = slow.acquire("onboard/acme", lease=30)
    clock.now += dt.timedelta(seconds=29)
    assert other.acquire("onboard/acme", lease=30) is None
    clock.now += dt.timedelta(seconds=2)
    taken = other.acquire("onboard/acme", lease=30)
    assert taken is not None
    assert not slow.complete(claim, result="late")
    assert not slow.release(claim)
    assert slow.renew(claim, lease=30) is None
    record = other.inspect("onboard/acme")
    assert (record.holder, record.state) == (other.holder, "held")
    assert other.complete(taken, result="done-by-other")


def test_renewing_keeps_a_claim_past_its_first_lease(claims_store) -> None:
    clock = Clock()
    holder, other = claims_store(now=clock), claims_store(now=clock)
    claim = holder.acquire("chunk/slot/0", lease=10)
    clock.now += dt.timedelta(seconds=8)
    claim = holder.renew(claim, lease=10)
    assert isinstance(claim, Claim)
    clock.now += dt.timedelta(seconds=8)
    assert other.acquire("chunk/slot/0", lease=10) is None
    assert holder.complete(claim)


def test_racing_instances_on_a_new_key_give_exactly_one_winner_every_time(claims_store) -> None:
    instances = [claims_store() for _ in range(RACERS)]
    winners = []
    for round_ in range(ROUNDS):
        results = race(instances, lambda claims, key=f"race/{round_}": claims.acquire(key, lease=60))
        winners.append(sum(result is not None for result in results))
    assert winners == [1] * ROUNDS


def test_racing_instances_on_an_expired_claim_give_exactly_one_winner_every_time(claims_store) -> None:
    clock = Clock()
    instances = [claims_store(now=clock) for _ in range(RACERS)]
    dead = claims_store(now=clock)
    for round_ in range(ROUNDS):
        assert dead.acquire(f"expired/{round_}", lease=5) is not None
    clock.now += dt.timedelta(seconds=6)
    winners = []
    for round_ in range(ROUNDS):
        results = race(instances, lambda claims, key=f"expired/{round_}": claims.acquire(key, lease=60))
        winners.append(sum(result is not None for result in results))
    assert winners == [1] * ROUNDS


def test_racing_completions_and_takeovers_leave_one_story(claims_store) -> None:
    """A holder completing just as its lease ends, raced by takers: either it completed or one took over."""
    clock = Clock()
    instances = [claims_store(now=clock) for _ in range(RACERS)]
    for round_ in range(ROUNDS):
        key = f"edge/{round_}"
        claim = instances[0].acquire(key, lease=5)
        clock.now += dt.timedelta(seconds=6)

        def attempt(claims: Claims, key: str = key, claim: Claim = claim):
            if claims is instances[0]:
                return "completed" if claims.complete(claim, result="r") else None
            return "taken" if claims.acquire(key, lease=60) is not None else None

        outcomes = [result for result in race(instances, attempt) if result is not None]
        record = instances[1].inspect(key)
        assert len(outcomes) == 1, outcomes
        assert record.state == ("done" if outcomes == ["completed"] else "held")


def _subprocess_store(claims_store_id: str, claims: Claims) -> str:
    """Code building, in another process, a Claims over the same store as `claims`."""
    if claims_store_id == "local":
        return f"from common.claims.local import LocalClaims\nclaims = LocalClaims(Path({str(claims.root)!r}))"
    return textwrap.dedent(f"""
        from common.claims.gcs import GcsClaims, storage_client
        claims = GcsClaims(storage_client("local-project", {os.environ.get('_CLAIMS_ENDPOINT', '')!r}),
                           {claims.bucket_name!r})
    """)


def test_a_claim_whose_holder_was_killed_is_taken_over_after_its_lease(request, claims_store) -> None:
    adapter = request.node.callspec.params["claims_store"]
    survivor = claims_store()
    if adapter == "gcs":
        os.environ["_CLAIMS_ENDPOINT"] = request.getfixturevalue("claims_storage")
    code = "\n".join([
        "import sys, time", "from pathlib import Path", _subprocess_store(adapter, survivor),
        "claim = claims.acquire('onboard/killed', lease=2)",
        "print('held' if claim else 'lost', flush=True)",
        "time.sleep(600)",
    ])  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert survivor.acquire("onboard/killed", lease=60) is None  # its lease still runs
        deadline = time.monotonic() + 10
        taken = None
        while taken is None and time.monotonic() < deadline:
            time.sleep(0.2)
            taken = survivor.acquire("onboard/killed", lease=60)
        assert taken is not None, "the dead holder's claim was never taken over"
    finally:
        if holder.poll() is None:
            holder.kill()
        os.environ.pop("_CLAIMS_ENDPOINT", None)


@pytest.mark.parametrize("state", ["released", "done"])
def test_a_holder_whose_write_was_applied_but_unanswered_still_knows_it_won(claims_store, state) -> None:
    """A conditional write the store applied, retried by the client after a lost answer, is refused with a
    precondition failure; the claim is still the caller's (recognised by its record)."""
    claims = claims_store()
    claim = claims.acquire("retry/key", lease=60)
    changed = claim.record.model_copy(update={"state": state})
    generation = claims.write("retry/key", changed, if_generation=claim.generation)
    assert generation is not None
    assert claims.write("retry/key", changed, if_generation=claim.generation) is None  # the retry: refused
    assert claims._won_by_retry("retry/key", changed) is not None
