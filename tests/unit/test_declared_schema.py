"""Fitting an upload to a table definition (common.sources.declared_schema), without HTTP.

The end-to-end behaviour is in tests/e2e/test_uploads_schema.py; here are the types no shipped schema uses
(NUMERIC, BIGNUMERIC, JSON, DATETIME, TIME, BYTES, REPEATED scalars) and the edges of each conversion.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import BadRequest
from common.sources.declared_schema import arrow_schema, fit_upload, schema_differences
from common.sources.upload_records import read_records
from common.warehouse.duckdb import DuckDBWarehouse
from common.warehouse.schema import TableSchema

LEDGER = TableSchema.model_validate(
    {
        "name": "ledger",
        "fields": [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "amount", "type": "NUMERIC"},
            {"name": "precise", "type": "BIGNUMERIC"},
            {"name": "ratio", "type": "FLOAT"},
            {"name": "paid", "type": "BOOLEAN"},
            {"name": "booked", "type": "DATE"},
            {"name": "at", "type": "TIMESTAMP"},
            {"name": "local", "type": "DATETIME"},
            {"name": "clock", "type": "TIME"},
            {"name": "blob", "type": "BYTES"},
            {"name": "payload", "type": "JSON"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "json", "type": "STRING"},
        ],
    }
)


def ndjson(*rows: dict[str, Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def fit(kind: str, body: bytes, schema: TableSchema = LEDGER) -> pa.Table:
    records = read_records(kind, body)  # type: ignore[arg-type]
    return fit_upload(records, schema, table=schema.name, origin="as declared").data


def refusal(kind: str, body: bytes, schema: TableSchema = LEDGER) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        fit(kind, body, schema)
    return caught.value


def test_the_fitted_table_has_exactly_the_declared_arrow_types() -> None:
    data = fit("ndjson", ndjson({"id": 1}))
    assert data.schema == arrow_schema(LEDGER)
    assert data.to_pylist()[0]["tags"] == [] and data.to_pylist()[0]["amount"] is None


def test_numeric_keeps_every_digit_written_and_rounds_half_away_from_zero_past_nine_places() -> None:
    body = b'{"id": 1, "amount": 0.1}\n{"id": 2, "amount": "0.2"}\n{"id": 3, "amount": -0.0000000005}\n'
    body += b'{"id": 4, "amount": 12345678901234567890123456789.123456789}\n'
    amounts = fit("ndjson", body).column("amount").to_pylist()
    assert amounts == [
        Decimal("0.1"),
        Decimal("0.2"),
        Decimal("-0.000000001"),
        Decimal("12345678901234567890123456789.123456789"),
    ]
    assert sum(amounts[:2]) == Decimal("0.3")


def test_numeric_sums_exactly_in_the_embedded_warehouse(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.create_dataset("acme")
    wh.create_table("acme", LEDGER)
    wh.load_arrow("acme", "ledger", fit("csv", b"id,amount,precise\n1,0.1,0.1\n2,0.2,0.2\n"))
    (row,) = wh.query("SELECT SUM(amount) AS a, SUM(precise) AS p FROM `acme`.`ledger`")
    assert (row["a"], row["p"]) == (Decimal("0.3"), Decimal("0.3"))


@pytest.mark.parametrize(
    "value,expected",
    [
        ("100000000000000000000000000000", "NUMERIC holds at most 29 digits"),
        ("NaN", "NUMERIC"),
        (True, "a boolean is not a number"),
    ],
)
def test_a_numeric_that_does_not_fit_is_refused(value: Any, expected: str) -> None:
    error = refusal("ndjson", ndjson({"id": 1, "amount": value}))
    assert error.code == "upload_type_mismatch" and expected in error.message
    assert error.details["column"] == "amount" and error.details["expected"] == "NUMERIC"


def test_int64_refuses_fractions_and_values_out_of_range() -> None:
    error = refusal("ndjson", ndjson({"id": 1}, {"id": 1.5}, {"id": 2**63}))
    assert [(p["row"], p["column"]) for p in error.details["problems"]] == [(2, "id"), (3, "id")]
    assert error.details["problem_count"] == 2


def test_timestamps_are_stored_in_utc_whatever_zone_they_were_written_in() -> None:
    body = b"id,at\n1,2025-11-15T00:30:00Z\n2,2025-11-15T01:30:00+01:00\n3,2025-11-15 00:30:00 UTC\n"
    body += b"4,2025-11-15 00:30:00\n5,2025-11-15T00:30:00+00\n6,2025-11-15 00:30:00.5 UTC\n"
    stamps = fit("csv", body).column("at").to_pylist()
    instant = dt.datetime(2025, 11, 15, 0, 30, tzinfo=dt.UTC)
    assert stamps[:5] == [instant] * 5
    assert stamps[5] == instant + dt.timedelta(milliseconds=500)


def test_datetime_time_bytes_and_bool_from_text() -> None:
    body = b"id,local,clock,blob,paid\n1,2025-11-15T08:00:00,08:15:30,aGVsbG8=,yes\n2,,,,0\n"
    rows = fit("csv", body).to_pylist()
    assert (rows[0]["local"], rows[0]["clock"], rows[0]["blob"], rows[0]["paid"]) == (
        dt.datetime(2025, 11, 15, 8), dt.time(8, 15, 30), b"hello", True,
    )  # fmt: skip
    assert (rows[1]["local"], rows[1]["clock"], rows[1]["blob"], rows[1]["paid"]) == (None, None, None, False)


def test_a_datetime_with_a_zone_is_refused() -> None:
    error = refusal("csv", b"id,local\n1,2025-11-15T08:00:00Z\n")
    assert error.details["expected"] == "DATETIME" and "time zone" in error.message


def test_json_is_the_value_in_ndjson_and_json_text_in_csv() -> None:
    from_ndjson = fit("ndjson", ndjson({"id": 1, "payload": {"a": [1, 2.5]}}, {"id": 2, "payload": "text"}))
    from_csv = fit("csv", b'id,payload\n1,"{""a"": [1, 2.5]}"\n2,"""text"""\n')
    assert from_ndjson.column("payload").to_pylist() == ['{"a":[1,2.5]}', '"text"']
    assert from_csv.column("payload").to_pylist() == ['{"a":[1,2.5]}', '"text"']
    assert refusal("csv", b"id,payload\n1,{not json}\n").details["column"] == "payload"


def test_a_repeated_column_in_csv_is_a_json_array_in_its_cell() -> None:
    data = fit("csv", b'id,tags\n1,"[""a"", ""b""]"\n2,\n')
    assert data.column("tags").to_pylist() == [["a", "b"], []]
    error = refusal("csv", b"id,tags\n1,a;b\n")
    assert error.details["column"] == "tags" and "JSON" in error.message


def test_string_keeps_numbers_as_written_and_a_column_may_be_named_json() -> None:
    data = fit("ndjson", b'{"id": 1, "json": 1.50}\n{"id": 2, "json": ""}\n')
    assert data.column("json").to_pylist() == ["1.50", ""]


def test_a_quoted_empty_csv_cell_is_an_empty_string_and_an_empty_cell_null() -> None:
    data = fit("csv", b'id,json,amount\n1,"",""\n2,,\n')
    assert data.column("json").to_pylist() == ["", None]
    assert data.column("amount").to_pylist() == [None, None]


def test_parquet_values_are_fitted_too() -> None:
    source = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "amount": [0.1, 0.2],  # a float column into NUMERIC: its shortest decimal form
            "at": pa.array([dt.datetime(2025, 11, 15, 0, 30)] * 2, pa.timestamp("ns")),
            "tags": [["x"], None],
        }
    )
    sink = io.BytesIO()
    pq.write_table(source, sink)
    rows = fit("parquet", sink.getvalue()).to_pylist()
    assert [r["amount"] for r in rows] == [Decimal("0.1"), Decimal("0.2")]
    assert rows[0]["at"] == dt.datetime(2025, 11, 15, 0, 30, tzinfo=dt.UTC)
    assert [r["tags"] for r in rows] == [["x"], []]


def test_rows_are_counted_as_data_rows_so_blank_ndjson_lines_do_not_count() -> None:
    error = refusal("ndjson", b'{"id": 1}\n\n{"id": 2}\n{"id": "three"}\n')
    assert error.details["row"] == 3


def test_many_problems_are_reported_up_to_ten_with_their_count() -> None:
    error = refusal("ndjson", ndjson(*({"id": "x"} for _ in range(25))))
    assert len(error.details["problems"]) == 10 and error.details["problem_count"] == 25
    assert "24 more problems" in error.message


def test_schema_differences_name_each_column_that_differs() -> None:
    def table(*fields: dict[str, str]) -> TableSchema:
        return TableSchema.model_validate({"name": "ledger", "fields": list(fields)})

    existing = table(
        {"name": "id", "type": "INT64"},
        {"name": "at", "type": "DATETIME"},
        {"name": "extra", "type": "STRING"},
    )
    declared = table(
        {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
        {"name": "at", "type": "TIMESTAMP"},
        {"name": "gone", "type": "STRING"},
    )
    assert schema_differences(existing, declared) == [
        "at is DATETIME, declared TIMESTAMP",
        "gone is missing",
        "extra is not declared",
    ]
    assert schema_differences(declared, declared) == []


def test_the_embedded_warehouse_reads_a_declared_table_back_as_declared(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.create_dataset("acme")
    wh.create_table("acme", LEDGER)
    read = wh.table_schema("acme", "ledger")
    assert [(f.name, f.signature(), f.mode) for f in read.fields] == [
        (f.name, f.signature(), f.mode) for f in LEDGER.fields
    ]
