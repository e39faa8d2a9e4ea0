"""The platform's table schemas, loaded from configs/schemas/{scope}/{table}.json (BigQuery JSON format)."""

from __future__ import annotations

import json
from functools import cache
from typing import Literal

from common.errors import NotFound
from common.settings import CONFIGS_DIR
from common.tenancy import TABLE_NAME_RE
from common.warehouse.schema import Clustering, SchemaField, TableSchema, TimePartitioning

__all__ = ["Clustering", "SchemaField", "TableSchema", "TimePartitioning", "load_schema", "schema_names"]

SCHEMAS_DIR = CONFIGS_DIR / "schemas"
Scope = Literal["control", "tenant"]


@cache
def load_schema(scope: Scope, table: str) -> TableSchema:
    """Load configs/schemas/{scope}/{table}.json; an unknown table is NotFound."""
    if not TABLE_NAME_RE.fullmatch(table):
        raise NotFound(f"no schema for table {table!r}")
    path = SCHEMAS_DIR / scope / f"{table}.json"
    if not path.is_file():
        raise NotFound(f"no schema for table {table!r}")
    schema = TableSchema.model_validate(json.loads(path.read_text()))
    return schema.model_copy(update={"name": table})


def schema_names(scope: Scope) -> list[str]:
    """Every table defined for a scope, sorted."""
    return sorted(p.stem for p in (SCHEMAS_DIR / scope).glob("*.json"))
