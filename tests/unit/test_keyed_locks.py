"""The warehouses' in-process keyed locks serialise per key and forget keys nobody uses."""

from __future__ import annotations

import threading
import time

from common.warehouse.base import KeyedLocks


def test_same_key_is_serialised_and_other_keys_are_not():
    locks = KeyedLocks()
    inside: list[str] = []
    overlap = threading.Event()

    def hold(key: str, name: str) -> None:
        with locks.hold(key):
            inside.append(name)
            if len(inside) > 1:
                overlap.set()
            time.sleep(0.05)
            inside.remove(name)

    same = [threading.Thread(target=hold, args=("run:1", f"t{i}")) for i in range(4)]
    for thread in same:
        thread.start()
    for thread in same:
        thread.join()
    assert not overlap.is_set()

    other = [threading.Thread(target=hold, args=(f"run:{i}", f"u{i}")) for i in range(4)]
    for thread in other:
        thread.start()
    for thread in other:
        thread.join()
    assert overlap.is_set()


def test_a_key_is_forgotten_once_released():
    locks = KeyedLocks()
    for i in range(1000):
        with locks.hold(f"run:{i}"):
            assert len(locks) == 1
    assert len(locks) == 0
