"""The Claims port: take a key once across every instance, for a lease, and mark it done.

A claim is a record under a key: who holds it, until when (its lease), and its state — `held`, `released`
(free again) or `done` (the work it guarded happened; never taken again, and it may carry a `result`, e.g.
the run an idempotency key started). `acquire` succeeds for exactly one caller when the key is free: never
claimed, released, or held past its lease (its holder died or hung). Every change is a compare-and-set on
the record's generation, done by the store itself (Cloud Storage `if_generation_match`; a file lock shared
by every process of one host in embedded mode), so no lock held in one process decides anything.

A holder that outlives its lease may find its claim taken over: `release`, `complete` and `renew` then
return False and change nothing. Leases are measured on the instances' clocks (Google Cloud's are kept in
sync to well under a second); keep a lease far longer than the work it guards.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from common.errors import DependencyUnavailable

log = logging.getLogger(__name__)

State = Literal["held", "released", "done"]
Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ClaimRecord(BaseModel):
    """What the store keeps under a key."""

    model_config = ConfigDict(frozen=True)

    key: str
    holder: str
    nonce: str  # this taking of the claim: tells a holder's own retried write from another instance's
    state: State
    expires_at: dt.datetime
    result: str | None = None

    def free_at(self, now: dt.datetime) -> bool:
        """Whether another caller may take the key now."""
        return self.state == "released" or (self.state == "held" and self.expires_at <= now)


@dataclass(frozen=True)
class Claim:
    """A claim this caller holds: `generation` is what its next compare-and-set must still find."""

    key: str
    generation: int
    record: ClaimRecord


class Claims(ABC):
    """Atomic claims over one store; `holder` names this instance in the records it writes."""

    def __init__(self, *, holder: str | None = None, now: Clock = utc_now) -> None:
        self.holder = holder or uuid.uuid4().hex
        self._now = now

    # -- what a store provides ------------------------------------------------------------------------
    @abstractmethod
    def read(self, key: str) -> tuple[int, ClaimRecord] | None:
        """The record under `key` and its generation, or None when the key was never claimed."""

    @abstractmethod
    def write(self, key: str, record: ClaimRecord, *, if_generation: int) -> int | None:
        """Store `record` only if the key's generation is still `if_generation` (0: the key is absent).

        Returns the new generation, or None when another write came first.
        """

    def close(self) -> None:
        """Release the store's connections."""

    # -- claims -----------------------------------------------------------------------------------------
    def acquire(self, key: str, *, lease: float) -> Claim | None:
        """Take `key` for `lease` seconds; None when another caller holds it (within its lease) or it is done."""
        now = self._now()
        record = ClaimRecord(key=key, holder=self.holder, nonce=uuid.uuid4().hex, state="held",
                             expires_at=now + dt.timedelta(seconds=lease))  # fmt: skip
        current = self.read(key)
        if current is not None and not current[1].free_at(now):
            return None
        expected = current[0] if current is not None else 0
        generation = self.write(key, record, if_generation=expected)
        if generation is None:
            return self._won_by_retry(key, record)
        return Claim(key, generation, record)

    def release(self, claim: Claim) -> bool:
        """Free the key for the next caller (the work was not done, or may be done again)."""
        return self._replace(claim, state="released", expires_at=self._now()) is not None

    def complete(self, claim: Claim, result: str | None = None) -> bool:
        """Mark the key done for good, with what came of it; False when the claim was lost meanwhile."""
        return self._replace(claim, state="done", result=result) is not None

    def renew(self, claim: Claim, *, lease: float) -> Claim | None:
        """Extend a claim still held; None when it was lost (taken over after its lease)."""
        return self._replace(claim, expires_at=self._now() + dt.timedelta(seconds=lease))

    def inspect(self, key: str) -> ClaimRecord | None:
        """The record under `key` (None when never claimed)."""
        current = self.read(key)
        return current[1] if current is not None else None

    @contextmanager
    def hold(self, key: str, *, lease: float = 60.0, wait: float = 30.0) -> Iterator[Claim]:
        """Hold `key` as a mutex across instances while the block runs; free it afterwards, whatever happened.

        A caller finding the key held waits (backing off, with jitter) up to `wait` seconds, then gets a
        503 `busy` (retryable: its request changed nothing). The block must end well within `lease`: past
        it another instance may take the key over, which is what frees a key whose holder died.
        """
        deadline = time.monotonic() + wait
        delay = 0.01
        while (claim := self.acquire(key, lease=lease)) is None:
            if time.monotonic() >= deadline:
                raise DependencyUnavailable(
                    "another request on the same object is still being processed; retry shortly", code="busy"
                )
            time.sleep(delay * (0.5 + random.random()))  # jitter, not secrecy
            delay = min(delay * 2, 0.5)
        try:
            yield claim
        finally:
            if not self.release(claim):
                log.warning("claim %s outlived its lease of %.0f s and was taken over", key, lease)

    def wait_done(self, key: str, *, timeout: float, poll: float = 0.05) -> ClaimRecord | None:
        """Wait until `key` is done or free; its record then (None when never claimed or still held)."""
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            record = self.inspect(key)
            if record is None or record.state == "done" or record.free_at(self._now()):
                return record
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _replace(self, claim: Claim, **changes: object) -> Claim | None:
        record = claim.record.model_copy(update=changes)
        generation = self.write(claim.key, record, if_generation=claim.generation)
        if generation is None:
            won = self._won_by_retry(claim.key, record)
            return won
        return Claim(claim.key, generation, record)

    def _won_by_retry(self, key: str, record: ClaimRecord) -> Claim | None:
        # A write the store applied but whose answer was lost is retried by the client and then refused as
        # a precondition failure: the record found is ours, so we did win.
        current = self.read(key)
        if current is not None and current[1] == record:
            return Claim(key, current[0], record)
        return None
