"""The Warehouse port's contract, run against every adapter in WAREHOUSE_FACTORIES.

Only public methods of the port are used; SQL is GoogleSQL, values travel as @params.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pyarrow as pa
import pytest

from common.errors import BadRequest, ConvergenceError, NotFound
from common.metadata.schemas import SchemaField, TableSchema, load_schema, schema_names
from common.warehouse.base import Warehouse

UTC = dt.UTC
DS = "contract_ds"
ALL_SCHEMAS = [(scope, name) for scope in ("control", "tenant") for name in schema_names(scope)]  # type: ignore[arg-type]
EVENTS = TableSchema.model_validate(
    {
        "name": "events",
        "fields": [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "name", "type": "STRING"},
            {"name": "amount", "type": "FLOAT"},
            {"name": "ok", "type": "BOOLEAN"},
            {"name": "day", "type": "DATE"},
            {"name": "ts", "type": "TIMESTAMP"},
        ],
    }
)


def ref(table: str, dataset: str = DS) -> str:
    return f"`{dataset}`.`{table}`"


@pytest.fixture
def ds(warehouse: Warehouse) -> str:
    warehouse.create_dataset(DS)
    return DS


@pytest.fixture
def events(warehouse: Warehouse, ds: str) -> str:
    warehouse.create_table(ds, EVENTS)
    warehouse.insert_rows(
        ds,
        "events",
        [
            {
                "id": 1,
                "name": "a",
                "amount": 1.5,
                "ok": True,
                "day": dt.date(2024, 1, 1),
                "ts": dt.datetime(2024, 1, 1, 10, tzinfo=UTC),
            },
            {
                "id": 2,
                "name": "b",
                "amount": 2.25,
                "ok": False,
                "day": dt.date(2024, 1, 2),
                "ts": dt.datetime(2024, 1, 2, 10, tzinfo=UTC),
            },
            {
                "id": 3,
                "name": "c",
                "amount": None,
                "ok": None,
                "day": dt.date(2024, 1, 3),
                "ts": dt.datetime(2024, 1, 3, 10, tzinfo=UTC),
            },
        ],
    )
    return "events"


def sample_value(field: SchemaField, seed: int) -> Any:
    """A value of the field's type, distinct per seed, nested for RECORD and listed for REPEATED."""
    kind = field.type.upper()
    if kind in ("RECORD", "STRUCT"):
        value: Any = {child.name: sample_value(child, seed + i) for i, child in enumerate(field.fields)}
    elif kind in ("STRING",):
        value = f"{field.name}-{seed} ünïcode '\""
    elif kind in ("INTEGER", "INT64"):
        value = 1_000_000_000_000 + seed
    elif kind in ("FLOAT", "FLOAT64"):
        value = seed + 0.25
    elif kind in ("BOOLEAN", "BOOL"):
        value = seed % 2 == 0
    elif kind == "DATE":
        value = dt.date(2024, 2, 29) + dt.timedelta(days=seed % 3)
    elif kind == "TIMESTAMP":
        value = dt.datetime(2024, 3, 1, 12, 34, 56, 123456, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
        value += dt.timedelta(minutes=seed)
    else:
        raise AssertionError(f"no sample for {kind}")
    if field.mode == "REPEATED":
        return [value, value] if kind in ("RECORD", "STRUCT") else [value]
    return value


def _key(value: Any) -> str:
    """A lookup key of a first-column value: timestamps by their instant, whatever their zone."""
    return repr(value.astimezone(dt.UTC)) if isinstance(value, dt.datetime) else repr(value)


def sample_row(schema: TableSchema, seed: int = 0) -> dict[str, Any]:
    return {f.name: sample_value(f, seed + i) for i, f in enumerate(schema.fields)}


def assert_utc(value: Any) -> None:
    """Every TIMESTAMP in a value comes back tz-aware in UTC."""
    if isinstance(value, dt.datetime):
        assert value.utcoffset() == dt.timedelta(0), value
    elif isinstance(value, dict):
        for v in value.values():
            assert_utc(v)
    elif isinstance(value, list):
        for v in value:
            assert_utc(v)


# -- datasets ---------------------------------------------------------------------------------------------


def test_create_dataset_reports_whether_it_created(warehouse: Warehouse) -> None:
    assert not warehouse.dataset_exists(DS)
    assert warehouse.create_dataset(DS) is True
    assert warehouse.dataset_exists(DS)
    assert warehouse.create_dataset(DS) is False


def test_recreating_a_dataset_empties_it(warehouse: Warehouse, events: str) -> None:
    assert warehouse.create_dataset(DS, recreate=True) is True
    assert warehouse.dataset_exists(DS)
    assert warehouse.list_tables(DS) == []


def test_create_dataset_without_recreate_keeps_tables(warehouse: Warehouse, events: str) -> None:
    assert warehouse.create_dataset(DS) is False
    assert warehouse.count_rows(DS, events) == 3


def test_drop_dataset_removes_it_and_is_idempotent(warehouse: Warehouse, events: str) -> None:
    warehouse.drop_dataset(DS)
    assert not warehouse.dataset_exists(DS)
    assert not warehouse.table_exists(DS, events)
    warehouse.drop_dataset(DS)
    warehouse.drop_dataset("never_existed")


def test_datasets_are_separate(warehouse: Warehouse) -> None:
    for dataset in ("tenant_one", "tenant_two"):
        warehouse.create_dataset(dataset)
        warehouse.create_table(dataset, EVENTS)
    warehouse.insert_rows("tenant_one", "events", [{"id": 1}])
    assert warehouse.count_rows("tenant_one", "events") == 1
    assert warehouse.count_rows("tenant_two", "events") == 0
    warehouse.drop_dataset("tenant_one")
    assert warehouse.table_exists("tenant_two", "events")


# -- tables -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "name"), ALL_SCHEMAS, ids=[f"{s}/{n}" for s, n in ALL_SCHEMAS])
def test_every_shipped_schema_creates_a_table_with_recreate_semantics(
    warehouse: Warehouse, ds: str, scope: str, name: str
) -> None:
    schema = load_schema(scope, name)  # type: ignore[arg-type]
    assert warehouse.create_table(ds, schema) is True
    assert warehouse.table_exists(ds, name)
    assert warehouse.table_columns(ds, name) == schema.column_names
    assert warehouse.insert_rows(ds, name, [sample_row(schema)]) == 1
    assert warehouse.create_table(ds, schema) is False
    assert warehouse.count_rows(ds, name) == 1
    assert warehouse.create_table(ds, schema, recreate=True) is True
    assert warehouse.count_rows(ds, name) == 0
    assert warehouse.table_columns(ds, name) == schema.column_names


@pytest.mark.parametrize(("scope", "name"), ALL_SCHEMAS, ids=[f"{s}/{n}" for s, n in ALL_SCHEMAS])
def test_rows_of_every_shipped_schema_round_trip_exactly(
    warehouse: Warehouse, ds: str, scope: str, name: str
) -> None:
    schema = load_schema(scope, name)  # type: ignore[arg-type]
    warehouse.create_table(ds, schema)
    rows = [sample_row(schema, seed) for seed in (0, 7)]
    warehouse.insert_rows(ds, name, rows)
    back = warehouse.query(f"SELECT * FROM {ref(name)} ORDER BY {schema.fields[0].name}")
    by_first = {_key(r[schema.fields[0].name]): r for r in back}
    assert len(back) == 2
    for row in rows:
        assert by_first[_key(row[schema.fields[0].name])] == row
    assert_utc(back)


def test_list_tables_is_sorted_and_per_dataset(warehouse: Warehouse, ds: str) -> None:
    for name in ("step_logs", "billing_cost_daily", "pipeline_runs"):
        warehouse.create_table(ds, load_schema("tenant", name))
    warehouse.create_dataset("other_ds")
    warehouse.create_table("other_ds", EVENTS)
    assert warehouse.list_tables(ds) == ["billing_cost_daily", "pipeline_runs", "step_logs"]
    assert warehouse.list_tables("other_ds") == ["events"]


def test_table_exists_is_false_for_missing_table_or_dataset(warehouse: Warehouse, ds: str) -> None:
    assert not warehouse.table_exists(ds, "events")
    assert not warehouse.table_exists("no_such_dataset", "events")


def test_table_columns_keep_schema_order(warehouse: Warehouse, ds: str) -> None:
    warehouse.create_table(ds, EVENTS)
    assert warehouse.table_columns(ds, "events") == ["id", "name", "amount", "ok", "day", "ts"]


def test_table_columns_of_missing_table_is_not_found(warehouse: Warehouse, ds: str) -> None:
    with pytest.raises(NotFound):
        warehouse.table_columns(ds, "missing")


# -- insert_rows ------------------------------------------------------------------------------------------


def test_nested_struct_and_repeated_records_round_trip(warehouse: Warehouse, ds: str) -> None:
    schema = load_schema("tenant", "gcp_billing_export_v1")
    warehouse.create_table(ds, schema)
    start = dt.datetime(2024, 1, 1, 18, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    row = {
        "billing_account_id": "0000-AAAA",
        "service": {"id": "6F81", "description": "Compute Engine"},
        "sku": {"id": "CP-1", "description": "N2 core"},
        "usage_start_time": start,
        "usage_end_time": start + dt.timedelta(hours=1),
        "project": {
            "id": "p1",
            "number": "123",
            "name": "Prod",
            "ancestry_numbers": "/1/",
            "labels": [{"key": "env", "value": "prod"}, {"key": "team", "value": "core"}],
            "ancestors": [],
        },
        "labels": [{"key": "app", "value": "api"}],
        "system_labels": [],
        "location": {"location": "us-central1", "country": "US", "region": "us-central1", "zone": None},
        "cost": 12.345678,
        "currency": "USD",
        "usage": {
            "amount": 3600.0,
            "unit": "seconds",
            "amount_in_pricing_units": 1.0,
            "pricing_unit": "hour",
        },
        "credits": [
            {
                "name": "Sustained use",
                "amount": -1.25,
                "full_name": None,
                "id": "c1",
                "type": "SUSTAINED_USAGE_DISCOUNT",
            },
            {"name": "Promo", "amount": -0.5, "full_name": "Free trial", "id": "c2", "type": "PROMOTION"},
        ],
        "tags": [{"key": "k", "value": "v", "inherited": True, "namespace": "123"}],
    }
    assert warehouse.insert_rows(ds, "gcp_billing_export_v1", [row]) == 1
    (back,) = warehouse.query(f"SELECT * FROM {ref('gcp_billing_export_v1')}")
    for key, value in row.items():
        assert back[key] == value, key
    assert back["usage_start_time"].utcoffset() == dt.timedelta(0)
    assert back["usage_start_time"] == dt.datetime(2024, 1, 1, 23, 30, tzinfo=UTC)
    assert back["export_time"] is None


def test_unknown_column_in_insert_rows_is_bad_request(warehouse: Warehouse, events: str) -> None:
    with pytest.raises(BadRequest) as caught:
        warehouse.insert_rows(DS, events, [{"id": 9, "colour": "red"}])
    assert caught.value.status == 400
    assert "colour" in caught.value.message
    assert warehouse.count_rows(DS, events) == 3


def test_row_missing_a_required_value_is_bad_request(warehouse: Warehouse, events: str) -> None:
    with pytest.raises(BadRequest) as caught:
        warehouse.insert_rows(DS, events, [{"id": 7, "name": "ok"}, {"name": "no id"}])
    assert caught.value.status == 400
    assert warehouse.count_rows(DS, events) == 3


def test_value_of_the_wrong_type_in_insert_rows_is_bad_request(warehouse: Warehouse, events: str) -> None:
    with pytest.raises(BadRequest):
        warehouse.insert_rows(DS, events, [{"id": "seven"}])
    assert warehouse.count_rows(DS, events) == 3


def test_insert_rows_of_nothing_inserts_nothing(warehouse: Warehouse, events: str) -> None:
    assert warehouse.insert_rows(DS, events, []) == 0
    assert warehouse.count_rows(DS, events) == 3


def test_insert_rows_leaves_missing_nullable_columns_null(warehouse: Warehouse, ds: str) -> None:
    warehouse.create_table(ds, EVENTS)
    warehouse.insert_rows(ds, "events", [{"id": 5}])
    assert warehouse.query(f"SELECT * FROM {ref('events')}") == [
        {"id": 5, "name": None, "amount": None, "ok": None, "day": None, "ts": None}
    ]


# -- query ------------------------------------------------------------------------------------------------


def test_query_parameters_of_every_type(warehouse: Warehouse) -> None:
    when = dt.datetime(2024, 2, 29, 23, 59, 58, 500000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    (row,) = warehouse.query(
        "SELECT @s AS s, @i AS i, @f AS f, @b AS b, @d AS d, @t AS t",
        {"s": "héllo 'world'", "i": 2**53 + 1, "f": 0.1, "b": True, "d": dt.date(2024, 2, 29), "t": when},
    )
    assert row["s"] == "héllo 'world'"
    assert row["i"] == 2**53 + 1
    assert row["f"] == 0.1
    assert row["b"] is True
    assert row["d"] == dt.date(2024, 2, 29)
    assert row["t"] == when and row["t"].utcoffset() == dt.timedelta(0)


def test_query_parameters_filter_rows(warehouse: Warehouse, events: str) -> None:
    rows = warehouse.query(
        f"SELECT id FROM {ref(events)} WHERE name = @name OR (day >= @day AND ok = @ok) OR amount > @amount"
        " ORDER BY id",
        {"name": "a", "day": dt.date(2024, 1, 2), "ok": False, "amount": 100.0},
    )
    assert [r["id"] for r in rows] == [1, 2]


def test_list_parameter_with_in_unnest(warehouse: Warehouse, events: str) -> None:
    rows = warehouse.query(
        f"SELECT id FROM {ref(events)} WHERE id IN UNNEST(@ids) ORDER BY id", {"ids": [1, 3, 99]}
    )
    assert [r["id"] for r in rows] == [1, 3]
    names = warehouse.query(f"SELECT id FROM {ref(events)} WHERE name IN UNNEST(@names)", {"names": ["b"]})
    assert names == [{"id": 2}]


def test_null_parameter(warehouse: Warehouse, events: str) -> None:
    (row,) = warehouse.query("SELECT @n IS NULL AS is_null", {"n": None})
    assert row["is_null"] is True
    rows = warehouse.query(f"SELECT id FROM {ref(events)} WHERE amount IS NULL OR amount = @n", {"n": None})
    assert rows == [{"id": 3}]


def test_googlesql_dialect_features(warehouse: Warehouse, ds: str) -> None:
    schema = load_schema("tenant", "gcp_billing_export_v1")
    warehouse.create_table(ds, schema)
    base = dt.datetime(2024, 1, 1, 10, tzinfo=UTC)
    warehouse.insert_rows(
        ds,
        "gcp_billing_export_v1",
        [
            {
                "service": {"id": "s", "description": "Compute"},
                "usage_start_time": base,
                "cost": 10.0,
                "credits": [{"name": "a", "amount": -1.0}, {"name": "b", "amount": -2.0}],
            },
            {
                "service": {"id": "s", "description": "Compute"},
                "usage_start_time": base + dt.timedelta(hours=1),
                "cost": 5.0,
                "credits": [],
            },
            {
                "service": {"id": "t", "description": "Storage"},
                "usage_start_time": base,
                "cost": 1.0,
                "credits": [{"name": "c", "amount": -0.5}],
            },
        ],
    )
    table = ref("gcp_billing_export_v1")
    totals = warehouse.query(
        f"SELECT DATE(usage_start_time) AS day, service.description AS service, SUM(cost) AS cost,"
        f" SUM(IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c), 0)) AS credits"
        f" FROM {table} WHERE DATE(usage_start_time) = @day GROUP BY day, service ORDER BY service",
        {"day": dt.date(2024, 1, 1)},
    )
    assert totals == [
        {"day": dt.date(2024, 1, 1), "service": "Compute", "cost": 15.0, "credits": -3.0},
        {"day": dt.date(2024, 1, 1), "service": "Storage", "cost": 1.0, "credits": -0.5},
    ]
    credit_names = warehouse.query(f"SELECT c.name FROM {table}, UNNEST(credits) AS c ORDER BY c.name")
    assert [r["name"] for r in credit_names] == ["a", "b", "c"]
    latest = warehouse.query(
        f"SELECT service.description AS service, cost FROM {table} WHERE TRUE"
        " QUALIFY ROW_NUMBER() OVER (PARTITION BY service.id ORDER BY usage_start_time DESC) = 1 ORDER BY service"
    )
    assert latest == [{"service": "Compute", "cost": 5.0}, {"service": "Storage", "cost": 1.0}]
    trimmed = warehouse.query(
        f"SELECT * EXCEPT (service, sku, project, labels, system_labels, location, usage, credits, invoice,"
        f" adjustment_info, tags) FROM {table} LIMIT 1"
    )
    assert "credits" not in trimmed[0] and "service" not in trimmed[0] and "cost" in trimmed[0]


def test_date_arithmetic_returns_dates(warehouse: Warehouse) -> None:
    (row,) = warehouse.query(
        "SELECT DATE_ADD(@d, INTERVAL 1 DAY) AS next_day, DATE_SUB(@d, INTERVAL 1 MONTH) AS month_before,"
        " DATE_DIFF(@d, DATE '2024-01-01', DAY) AS days",
        {"d": dt.date(2024, 2, 29)},
    )
    assert row == {"next_day": dt.date(2024, 3, 1), "month_before": dt.date(2024, 1, 29), "days": 59}
    assert type(row["next_day"]) is dt.date and type(row["month_before"]) is dt.date


def test_date_of_a_timestamp_is_the_utc_date(warehouse: Warehouse, ds: str) -> None:
    warehouse.create_table(ds, EVENTS)
    late = dt.datetime(2024, 1, 1, 23, 30, tzinfo=UTC).astimezone(dt.timezone(dt.timedelta(hours=9)))
    early = dt.datetime(2024, 1, 2, 0, 30, tzinfo=UTC).astimezone(dt.timezone(dt.timedelta(hours=-8)))
    warehouse.insert_rows(ds, "events", [{"id": 1, "ts": late}, {"id": 2, "ts": early}])
    rows = warehouse.query(
        f"SELECT id, DATE(ts) AS d, EXTRACT(HOUR FROM ts) AS h FROM {ref('events')} ORDER BY id"
    )
    assert rows == [{"id": 1, "d": dt.date(2024, 1, 1), "h": 23}, {"id": 2, "d": dt.date(2024, 1, 2), "h": 0}]
    on_day = warehouse.query(
        f"SELECT id FROM {ref('events')} WHERE DATE(ts) = @d", {"d": dt.date(2024, 1, 2)}
    )
    assert on_day == [{"id": 2}]


def test_value_containing_sql_is_stored_literally(warehouse: Warehouse, events: str) -> None:
    attack = "x'); DROP TABLE events; --"
    assert (
        warehouse.execute(
            f"INSERT INTO {ref(events)} (id, name) VALUES (@id, @name)", {"id": 4, "name": attack}
        )
        == 1
    )
    warehouse.insert_rows(DS, events, [{"id": 5, "name": 'y"); DELETE FROM events; --'}])
    assert warehouse.table_exists(DS, events)
    assert warehouse.count_rows(DS, events) == 5
    found = warehouse.query(f"SELECT id FROM {ref(events)} WHERE name = @name", {"name": attack})
    assert found == [{"id": 4}]
    assert warehouse.query(f"SELECT name FROM {ref(events)} WHERE id = 5") == [
        {"name": 'y"); DELETE FROM events; --'}
    ]
    assert warehouse.query(f"SELECT id FROM {ref(events)} WHERE name = @name", {"name": "' OR '1'='1"}) == []


def test_query_on_a_missing_table_is_not_found(warehouse: Warehouse, ds: str) -> None:
    with pytest.raises(NotFound) as caught:
        warehouse.query(f"SELECT * FROM {ref('missing')}")
    assert caught.value.status == 404
    with pytest.raises(NotFound):
        warehouse.query(f"SELECT * FROM {ref('missing', 'no_such_dataset')}")


# -- execute and run_atomically ---------------------------------------------------------------------------


def test_execute_returns_affected_row_counts(warehouse: Warehouse, events: str) -> None:
    table = ref(events)
    assert (
        warehouse.execute(f"INSERT INTO {table} (id, name) VALUES (@a, 'd'), (@b, 'e')", {"a": 4, "b": 5})
        == 2
    )
    assert warehouse.execute(f"UPDATE {table} SET name = @n WHERE id >= @min", {"n": "z", "min": 3}) == 3
    assert warehouse.execute(f"UPDATE {table} SET name = 'none' WHERE id > 100") == 0
    assert warehouse.execute(f"DELETE FROM {table} WHERE name = @n", {"n": "z"}) == 3
    assert warehouse.count_rows(DS, events) == 2


def test_run_atomically_applies_every_statement(warehouse: Warehouse, events: str) -> None:
    table = ref(events)
    counts = warehouse.run_atomically(
        [
            (f"DELETE FROM {table} WHERE id = @id", {"id": 1}),
            (f"INSERT INTO {table} (id, name) VALUES (10, 'x'), (11, 'y')", None),
            (f"UPDATE {table} SET name = 'u' WHERE id IN UNNEST(@ids)", {"ids": [2, 10]}),
        ]
    )
    assert counts == [1, 2, 2]
    assert [r["id"] for r in warehouse.query(f"SELECT id FROM {table} ORDER BY id")] == [2, 3, 10, 11]


@pytest.mark.parametrize(
    "failing",
    [
        "INSERT INTO `contract_ds`.`missing` (id) VALUES (1)",
        "INSERT INTO `contract_ds`.`events` (id) VALUES (NULL)",
    ],
    ids=["missing_table", "null_in_required_column"],
)
def test_run_atomically_is_all_or_nothing(warehouse: Warehouse, events: str, failing: str) -> None:
    table = ref(events)
    with pytest.raises(ConvergenceError):
        warehouse.run_atomically(
            [
                (f"DELETE FROM {table} WHERE id = 1", None),
                (f"INSERT INTO {table} (id, name) VALUES (20, 'new')", None),
                (failing, None),
            ]
        )
    assert [r["id"] for r in warehouse.query(f"SELECT id FROM {table} ORDER BY id")] == [1, 2, 3]
    assert warehouse.run_atomically([(f"DELETE FROM {table} WHERE id = 3", None)]) == [1]


# -- load_arrow -------------------------------------------------------------------------------------------


def test_load_arrow_creates_then_appends(warehouse: Warehouse, ds: str) -> None:
    first = pa.table({"id": [1, 2], "name": ["a", "b"]})
    assert warehouse.load_arrow(ds, "uploads", first) == 2
    assert warehouse.table_exists(ds, "uploads")
    assert warehouse.table_columns(ds, "uploads") == ["id", "name"]
    assert warehouse.load_arrow(ds, "uploads", pa.table({"id": [3], "name": ["c"]})) == 1
    rows = warehouse.query(f"SELECT id, name FROM {ref('uploads')} ORDER BY id")
    assert rows == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]


def test_load_arrow_replace_swaps_the_table(warehouse: Warehouse, ds: str) -> None:
    warehouse.load_arrow(ds, "uploads", pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]}))
    assert warehouse.load_arrow(ds, "uploads", pa.table({"sku": ["x"], "cost": [1.5]}), mode="replace") == 1
    assert warehouse.table_columns(ds, "uploads") == ["sku", "cost"]
    assert warehouse.query(f"SELECT * FROM {ref('uploads')}") == [{"sku": "x", "cost": 1.5}]


def test_load_arrow_keeps_timestamps_and_dates(warehouse: Warehouse, ds: str) -> None:
    when = dt.datetime(2024, 1, 1, 23, 30, tzinfo=UTC)
    data = pa.table({"ts": pa.array([when], pa.timestamp("us", tz="UTC")), "day": [dt.date(2024, 1, 1)]})
    warehouse.load_arrow(ds, "stamped", data)
    (row,) = warehouse.query(f"SELECT ts, day, DATE(ts) AS d FROM {ref('stamped')}")
    assert row == {"ts": when, "day": dt.date(2024, 1, 1), "d": dt.date(2024, 1, 1)}
    assert row["ts"].utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "incompatible",
    [pa.table({"id": ["not a number"], "name": ["x"]}), pa.table({"colour": ["red"]})],
    ids=["wrong_type", "unknown_column"],
)
def test_appending_incompatible_data_is_bad_request_and_keeps_rows(
    warehouse: Warehouse, ds: str, incompatible: pa.Table
) -> None:
    warehouse.load_arrow(ds, "uploads", pa.table({"id": [1, 2], "name": ["a", "b"]}))
    with pytest.raises(BadRequest) as caught:
        warehouse.load_arrow(ds, "uploads", incompatible)
    assert caught.value.status == 400
    assert warehouse.table_columns(ds, "uploads") == ["id", "name"]
    assert warehouse.query(f"SELECT id, name FROM {ref('uploads')} ORDER BY id") == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
    ]


# -- reading ----------------------------------------------------------------------------------------------


def test_count_rows_and_read_rows_pages(warehouse: Warehouse, ds: str) -> None:
    warehouse.load_arrow(ds, "numbers", pa.table({"n": list(range(25))}))
    assert warehouse.count_rows(ds, "numbers") == 25
    pages = [warehouse.read_rows(ds, "numbers", limit=10, offset=o) for o in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 5, 0]
    seen = [r["n"] for page in pages for r in page]
    assert sorted(seen) == list(range(25))


def test_count_rows_of_missing_table_is_not_found(warehouse: Warehouse, ds: str) -> None:
    with pytest.raises(NotFound):
        warehouse.count_rows(ds, "missing")


# -- lock -------------------------------------------------------------------------------------------------


def test_lock_serialises_two_threads_on_the_same_key(warehouse: Warehouse) -> None:
    events: list[str] = []
    first_inside = threading.Event()

    def first() -> None:
        with warehouse.lock("start:acme:run"):
            events.append("first in")
            first_inside.set()
            time.sleep(0.2)
            events.append("first out")

    def second() -> None:
        first_inside.wait(5)
        with warehouse.lock("start:acme:run"):
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert events == ["first in", "first out", "second in"]


def test_lock_on_different_keys_does_not_block(warehouse: Warehouse) -> None:
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with warehouse.lock("key-a"):
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert inside.wait(5)
        started = time.monotonic()
        with warehouse.lock("key-b"):
            assert time.monotonic() - started < 1.0
    finally:
        release.set()
        thread.join(5)


def test_lock_protects_a_read_then_write(warehouse: Warehouse, ds: str) -> None:
    warehouse.load_arrow(ds, "counter", pa.table({"n": [0]}))

    def bump() -> None:
        for _ in range(5):
            with warehouse.lock("counter"):
                (row,) = warehouse.query(f"SELECT n FROM {ref('counter')}")
                time.sleep(0.002)
                warehouse.execute(f"UPDATE {ref('counter')} SET n = @n WHERE TRUE", {"n": row["n"] + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert warehouse.query(f"SELECT n FROM {ref('counter')}") == [{"n": 20}]
