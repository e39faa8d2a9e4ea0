"""The BigQuery warehouse adapter against bqemulator, for the warehouse contract suite."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from common.warehouse.base import Warehouse
from common.warehouse.bigquery import BigQueryWarehouse


def make_bigquery(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """A BigQueryWarehouse on the session's emulator, in a project of its own so tests share no state."""
    endpoint = request.getfixturevalue("bigquery_emulator")
    return BigQueryWarehouse(f"contract-{uuid.uuid4().hex[:12]}", "US", emulator_host=endpoint)


WAREHOUSE_FACTORIES = {"bigquery": make_bigquery}
