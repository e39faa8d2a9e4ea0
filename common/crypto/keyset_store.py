"""Where wrapped tenant keysets are kept: one row per keyset in the control table `tenant_keysets`.

A `KeysetRecord` is such a row; `KeysetStore` is the port through which the tenant keyset keyring
(common.crypto.tenant_keys) reads and writes them. `WarehouseKeysetStore` keeps them in the control dataset
by parameterised DML, `InMemoryKeysetStore` in a dict for tests. A store holds wrapped keysets only: it never
sees key material in clear, and needs no KEK to tell which key ids a keyset holds (its KeysetInfo is clear).
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tink.proto import tink_pb2

if TYPE_CHECKING:
    pass

KEYSET_TABLE = "tenant_keysets"


@dataclass(frozen=True)
class KeysetRecord:
    """One row of tenant_keysets."""

    keyset_id: str
    tenant_id: str
    wrapped_keyset: str
    kek_key_name: str
    kek_version: str | None
    primary_key_id: int
    key_count: int
    rotation_id: str | None
    rotation_state: str
    revision: int
    created_at: dt.datetime
    rotated_at: dt.datetime | None = None

    @property
    def key_ids(self) -> frozenset[int]:
        """Ids of the keys in the wrapped keyset, read from its cleartext KeysetInfo (no KEK call)."""
        info = tink_pb2.EncryptedKeyset.FromString(base64.b64decode(self.wrapped_keyset)).keyset_info
        return frozenset(k.key_id for k in info.key_info)


class KeysetStore(ABC):
    """Where wrapped tenant keysets live."""

    @abstractmethod
    def records(self, tenant_id: str) -> list[KeysetRecord]:
        """The tenant's keyset rows, the one in force first (oldest created_at, then keyset_id)."""

    @abstractmethod
    def add(self, record: KeysetRecord) -> KeysetRecord:
        """Store a tenant's first keyset unless it has one; return the row in force afterwards."""

    @abstractmethod
    def replace(self, current: KeysetRecord, new: KeysetRecord) -> bool:
        """Replace `current` by `new` unless its revision changed meanwhile (compare-and-set)."""

    @abstractmethod
    def tenant_ids(self) -> list[str]:
        """Every tenant that has a keyset, sorted."""

    def get(self, tenant_id: str) -> KeysetRecord | None:
        """The row in force, or None for a tenant without a keyset."""
        rows = self.records(tenant_id)
        return rows[0] if rows else None


class InMemoryKeysetStore(KeysetStore):
    """A store in a dict: for unit tests and throwaway keyrings."""

    def __init__(self) -> None:
        self._rows: dict[str, list[KeysetRecord]] = {}
        self._lock = threading.Lock()

    def records(self, tenant_id: str) -> list[KeysetRecord]:
        with self._lock:
            return sorted(self._rows.get(tenant_id, []), key=lambda r: (r.created_at, r.keyset_id))

    def add(self, record: KeysetRecord) -> KeysetRecord:
        with self._lock:
            rows = self._rows.setdefault(record.tenant_id, [])
            if not rows:
                rows.append(record)
        return self.records(record.tenant_id)[0]

    def replace(self, current: KeysetRecord, new: KeysetRecord) -> bool:
        with self._lock:
            rows = self._rows.get(current.tenant_id, [])
            for index, row in enumerate(rows):
                if row.keyset_id == current.keyset_id and row.revision == current.revision:
                    rows[index] = new
                    return True
            return False

    def tenant_ids(self) -> list[str]:
        with self._lock:
            return sorted(t for t, rows in self._rows.items() if rows)
