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
from typing import TYPE_CHECKING, Any

from tink.proto import tink_pb2

from common.errors import ConfigurationError, NotFound

if TYPE_CHECKING:
    from common.warehouse.base import Warehouse

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


_COLUMNS = tuple(KeysetRecord.__dataclass_fields__)
_MUTABLE = ("wrapped_keyset", "kek_key_name", "kek_version", "primary_key_id", "key_count", "rotation_id",
            "rotation_state", "revision", "rotated_at")  # fmt: skip


class WarehouseKeysetStore(KeysetStore):
    """tenant_keysets in the control dataset, by parameterised GoogleSQL (DML only, never streaming)."""

    def __init__(self, warehouse: Warehouse, dataset: str) -> None:
        from common.warehouse.sql import table_ref

        self.warehouse = warehouse
        self.dataset = dataset
        self._table = table_ref(dataset, KEYSET_TABLE)

    def _ensure_table(self) -> None:
        # A platform bootstrapped before this table existed gets it on first use (bootstrap creates it now).
        from common.metadata.schemas import load_schema

        if not self.warehouse.dataset_exists(self.dataset):
            raise ConfigurationError(
                f"CONTROL_DATASET: the control dataset {self.dataset} does not exist; bootstrap the platform"
            )
        self.warehouse.create_table(self.dataset, load_schema("control", KEYSET_TABLE))

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            return self.warehouse.query(sql, params)
        except NotFound:
            self._ensure_table()
            return self.warehouse.query(sql, params)

    def records(self, tenant_id: str) -> list[KeysetRecord]:
        rows = self._query(
            f"SELECT {', '.join(_COLUMNS)} FROM {self._table} WHERE tenant_id = @tenant_id"
            " ORDER BY created_at, keyset_id",
            {"tenant_id": tenant_id},
        )
        return [KeysetRecord(**row) for row in rows]

    def add(self, record: KeysetRecord) -> KeysetRecord:
        # The lock serialises creators this adapter can see; should two instances still race, both rows stay,
        # the older one is in force, and decrypt finds any ciphertext's key through the rows' KeysetInfo.
        with self.warehouse.lock(f"tenant_keyset:{record.tenant_id}"):
            existing = self.records(record.tenant_id)
            if existing:
                return existing[0]
            # NULLs are left out rather than bound: a BigQuery NULL parameter needs a type we cannot infer.
            params = {c: getattr(record, c) for c in _COLUMNS if getattr(record, c) is not None}
            columns, values = ", ".join(params), ", ".join(f"@{c}" for c in params)
            self.warehouse.execute(f"INSERT INTO {self._table} ({columns}) VALUES ({values})", params)
            return self.records(record.tenant_id)[0]

    def replace(self, current: KeysetRecord, new: KeysetRecord) -> bool:
        params = {c: getattr(new, c) for c in _MUTABLE if getattr(new, c) is not None}
        assignments = ", ".join(f"{c} = @{c}" if c in params else f"{c} = NULL" for c in _MUTABLE)
        params.update(keyset_id=current.keyset_id, expected_revision=current.revision)
        sql = (
            f"UPDATE {self._table} SET {assignments}"
            " WHERE keyset_id = @keyset_id AND revision = @expected_revision"
        )
        return self.warehouse.execute(sql, params) == 1

    def tenant_ids(self) -> list[str]:
        rows = self._query(f"SELECT DISTINCT tenant_id FROM {self._table} ORDER BY tenant_id")
        return [row["tenant_id"] for row in rows]
