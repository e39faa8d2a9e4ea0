"""Claims of embedded mode: one JSON file per key, every change made under an exclusive `flock`.

`flock` is kept by the operating system, not by this process: every process of the host (`convergence
serve`, `local up`'s functions, a CLI) sees the same claims. That is the whole of embedded mode, which runs
on one machine; on Google Cloud the Cloud Storage store is used.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from common.claims.base import ClaimRecord, Claims, Clock, utc_now


class LocalClaims(Claims):
    def __init__(self, root: Path, *, holder: str | None = None, now: Clock = utc_now) -> None:
        super().__init__(holder=holder, now=now)
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self, key: str) -> tuple[int, ClaimRecord] | None:
        try:
            stored = json.loads(self._path(key).read_text())
        except FileNotFoundError:
            return None
        return int(stored["generation"]), ClaimRecord.model_validate(stored["record"])

    def read(self, key: str) -> tuple[int, ClaimRecord] | None:
        with self._locked():
            return self._load(key)

    def write(self, key: str, record: ClaimRecord, *, if_generation: int) -> int | None:
        with self._locked():
            current = self._load(key)
            if (current[0] if current is not None else 0) != if_generation:
                return None
            generation = if_generation + 1
            path = self._path(key)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"generation": generation, "record": record.model_dump(mode="json")}))
            os.replace(temporary, path)
            return generation
