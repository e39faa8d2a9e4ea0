"""The tenant_keysets control table: each tenant's wrapped Tink keyset, behind the KeysetStore port."""

from __future__ import annotations

from typing import Any

from common.claims.base import Claims
from common.crypto.keyset_store import KEYSET_TABLE, KeysetRecord, KeysetStore
from common.errors import ConfigurationError, NotFound
from common.metadata.schemas import load_schema
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

_COLUMNS = tuple(KeysetRecord.__dataclass_fields__)
_MUTABLE = ("wrapped_keyset", "kek_key_name", "kek_version", "primary_key_id", "key_count", "rotation_id",
            "rotation_state", "revision", "rotated_at")  # fmt: skip


class WarehouseKeysetStore(KeysetStore):
    """tenant_keysets in the control dataset, by parameterised GoogleSQL (DML only, never streaming)."""

    def __init__(self, warehouse: Warehouse, dataset: str, claims: Claims) -> None:
        self.warehouse = warehouse
        self.claims = claims
        self.dataset = dataset
        self._table = table_ref(dataset, KEYSET_TABLE)

    def _ensure_table(self) -> None:
        # A platform bootstrapped before this table existed gets it on first use (bootstrap creates it now).
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
        # The claim (held across instances) makes one creator write the row; the others find it. Should a
        # holder outlive its lease and two rows stay, the older one is in force, and decrypt finds any
        # ciphertext's key through the rows' KeysetInfo.
        with self.claims.hold(f"tenant-keyset/{record.tenant_id}"):
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
