"""The Warehouse port: what the platform needs from BigQuery, and what DuckDB provides locally."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from common.warehouse.schema import TableSchema
from common.warehouse.sql import table_ref

WriteMode = Literal["append", "replace"]
#: Tables the platform creates for a moment (staging of loads, emulated-transaction snapshots).
INTERNAL_PREFIX = "_convergence_"
Params = Mapping[str, Any]
Statement = tuple[str, Params | None]


@dataclass
class BytesMeter:
    """The bytes the warehouse reported processing for the statements run while it was active.

    None when the warehouse reports none (DuckDB); BigQuery reports each query job's total_bytes_processed.
    """

    bytes_processed: int | None = None

    def add(self, count: int | None) -> None:
        if count is not None:
            self.bytes_processed = (self.bytes_processed or 0) + int(count)


_METER: ContextVar[BytesMeter | None] = ContextVar("convergence_bytes_meter", default=None)


@contextmanager
def metered() -> Iterator[BytesMeter]:
    """Count what the statements run inside (in this thread or task) report processing."""
    meter = BytesMeter()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def report_bytes(count: int | None) -> None:
    """An adapter reports the bytes one of its statements processed (to the active meter, if any)."""
    meter = _METER.get()
    if meter is not None:
        meter.add(count)


class KeyedLocks:
    """One lock per key within this process; a key's lock is forgotten once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[str, list] = {}  # key -> [lock, holders and waiters]

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._entries.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._entries[key]

    def __len__(self) -> int:
        with self._guard:
            return len(self._entries)


class Warehouse(ABC):
    """A SQL warehouse of datasets and tables. SQL is GoogleSQL; values travel only as @params."""

    name: str = "warehouse"

    @abstractmethod
    def ping(self) -> None:
        """Raise DependencyUnavailable when the warehouse cannot answer."""

    @abstractmethod
    def create_dataset(
        self, dataset: str, *, recreate: bool = False, labels: Mapping[str, str] | None = None
    ) -> bool:
        """Create a dataset if absent (drop it first when recreate); True when it was created.

        `labels` are set on the dataset where the warehouse has them (BigQuery; an existing dataset gets
        them too), so billing exports and IAM conditions can tell whose it is.
        """

    @abstractmethod
    def dataset_exists(self, dataset: str) -> bool:
        """Whether the dataset exists."""

    @abstractmethod
    def drop_dataset(self, dataset: str) -> None:
        """Drop a dataset and every table in it; absent is fine."""

    @abstractmethod
    def create_table(self, dataset: str, schema: TableSchema, *, recreate: bool = False) -> bool:
        """Create a table from its schema if absent (drop first when recreate); True when created."""

    @abstractmethod
    def table_exists(self, dataset: str, table: str) -> bool:
        """Whether the table exists."""

    @abstractmethod
    def list_tables(self, dataset: str) -> list[str]:
        """Names of the tables in a dataset, sorted."""

    @abstractmethod
    def table_columns(self, dataset: str, table: str) -> list[str]:
        """Column names of a table, in order."""

    @abstractmethod
    def table_schema(self, dataset: str, table: str) -> TableSchema:
        """The definition of an existing table, read from the warehouse (NotFound when absent)."""

    @abstractmethod
    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """Run a GoogleSQL query and return its rows as dicts."""

    @abstractmethod
    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one DML or DDL statement; return the number of rows it affected (0 for DDL)."""

    @abstractmethod
    def run_atomically(self, statements: Sequence[Statement]) -> list[int]:
        """Run statements as one transaction: all take effect or none; affected rows per statement."""

    @abstractmethod
    def insert_rows(self, dataset: str, table: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append rows by a load or DML (never a streaming insert); unknown columns are refused."""

    @abstractmethod
    def load_arrow(self, dataset: str, table: str, data: pa.Table, *, mode: WriteMode = "append") -> int:
        """Load an Arrow table, creating the table from the data when absent; replace swaps it whole."""

    @abstractmethod
    def lock(self, key: str) -> AbstractContextManager[None]:
        """Serialise a read-then-write on `key` among callers this adapter can see."""

    def close(self) -> None:
        """Release connections."""

    def count_rows(self, dataset: str, table: str) -> int:
        """Number of rows in a table."""
        return int(self.query(f"SELECT COUNT(*) AS n FROM {table_ref(dataset, table)}")[0]["n"])

    def read_rows(self, dataset: str, table: str, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """A page of a table's rows."""
        return self.query(
            f"SELECT * FROM {table_ref(dataset, table)} LIMIT @limit OFFSET @offset",
            {"limit": limit, "offset": offset},
        )
