"""Platform reference tables (configs/reference/*.csv) copied into a tenant's dataset for its SQL to join.

A copy carries the file's content hash in `_version`; a step reloads the table only when the shipped file
changed, so the common case costs one small query.
"""

from __future__ import annotations

import hashlib
from functools import cache

import pyarrow as pa
import pyarrow.csv as pa_csv

from common.errors import ConfigurationError
from common.settings import CONFIGS_DIR
from common.tenancy import TABLE_NAME_RE
from common.warehouse.base import Warehouse
from common.warehouse.sql import table_ref

REFERENCE_DIR = CONFIGS_DIR / "reference"


@cache
def reference_data(name: str) -> pa.Table:
    """The reference CSV as an all-string Arrow table plus its `_version` column."""
    path = REFERENCE_DIR / f"{name}.csv"
    if not TABLE_NAME_RE.fullmatch(name) or not path.is_file():
        raise ConfigurationError(f"no reference table {name!r} in configs/reference")
    raw = path.read_bytes()
    names = pa_csv.read_csv(path).column_names
    data = pa_csv.read_csv(
        path, convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in names})
    )
    version = hashlib.sha256(raw).hexdigest()[:16]
    return data.append_column("_version", pa.array([version] * data.num_rows, pa.string()))


def load_reference_table(wh: Warehouse, dataset: str, name: str) -> bool:
    """Make `{dataset}.{name}` hold the shipped reference rows; True when it had to be (re)loaded."""
    data = reference_data(name)
    version = data.column("_version")[0].as_py() if data.num_rows else ""
    if wh.table_exists(dataset, name):
        rows = wh.query(
            f"SELECT MIN(_version) AS v, MAX(_version) AS w, COUNT(*) AS n FROM {table_ref(dataset, name)}"
        )
        if rows and rows[0]["v"] == version == rows[0]["w"] and int(rows[0]["n"]) == data.num_rows:
            return False
    wh.load_arrow(dataset, name, data, mode="replace")
    return True
