"""The BigQuery adapter without BigQuery: parameter typing, job adoption after 409, DDL from schemas."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlglot
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from common.errors import BadRequest, ConfigurationError, DependencyUnavailable, NotFound
from common.metadata.schemas import TableSchema, load_schema, schema_names
from common.warehouse.bigquery import (
    BigQueryWarehouse,
    QueryFailed,
    RowMismatch,
    create_table_ddl,
    ndjson_rows,
    prepare,
    query_parameter,
    transaction_script,
    translate,
)
from convergence.emulators.bigquery import bigquery_emulator_command, bqemulator_executable

# -- query parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("héllo", "STRING"),
        (True, "BOOL"),
        (2**53 + 1, "INT64"),
        (0.1, "FLOAT64"),
        (Decimal("1.0123456789"), "BIGNUMERIC"),
        (Decimal("-1.25"), "NUMERIC"),
        (dt.date(2024, 2, 29), "DATE"),
        (dt.datetime(2024, 2, 29, 23, 59, tzinfo=dt.UTC), "TIMESTAMP"),
        (dt.datetime(2024, 2, 29, 23, 59), "TIMESTAMP"),
        (dt.time(12, 30), "TIME"),
        (b"\x00\xff", "BYTES"),
        (None, "STRING"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) or len(v) > 10 else v,
)
def test_scalar_parameters_are_typed_from_their_python_value(value: Any, kind: str) -> None:
    parameter = query_parameter("p", value)
    assert isinstance(parameter, bigquery.ScalarQueryParameter)
    assert (parameter.name, parameter.type_, parameter.value) == ("p", kind, value)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([1, 3, 99], "INT64"),
        (["a", "b"], "STRING"),
        ([1, 2.5], "FLOAT64"),
        ([dt.date(2024, 1, 1)], "DATE"),
        ([], "STRING"),
    ],
)
def test_list_parameters_are_arrays_of_their_element_type(values: list[Any], kind: str) -> None:
    parameter = query_parameter("ids", values)
    assert isinstance(parameter, bigquery.ArrayQueryParameter)
    assert (parameter.array_type, parameter.values) == (kind, values)


@pytest.mark.parametrize("values", [[1, None], ["a", 1]], ids=["null_element", "mixed_types"])
def test_list_parameters_bigquery_cannot_type_are_refused(values: list[Any]) -> None:
    with pytest.raises(QueryFailed):
        query_parameter("ids", values)


def test_dict_parameters_are_structs_and_lists_of_dicts_arrays_of_structs() -> None:
    struct = query_parameter("s", {"a": 5, "b": None, "inner": {"when": dt.date(2024, 1, 1)}})
    assert struct.to_api_repr()["parameterType"] == {
        "type": "STRUCT",
        "structTypes": [
            {"name": "a", "type": {"type": "INT64"}},
            {"name": "b", "type": {"type": "STRING"}},
            {
                "name": "inner",
                "type": {"type": "STRUCT", "structTypes": [{"name": "when", "type": {"type": "DATE"}}]},
            },
        ],
    }
    rows = query_parameter("rows", [{"k": "x", "v": 1.5}, {"k": "y", "v": 2.0}])
    assert isinstance(rows, bigquery.ArrayQueryParameter) and rows.array_type == "STRUCT"
    assert rows.to_api_repr()["parameterValue"]["arrayValues"][1] == {
        "structValues": {"k": {"value": "y"}, "v": {"value": 2.0}}
    }


def test_only_the_parameters_the_sql_references_are_sent() -> None:
    sql, parameters = prepare("SELECT @a AS a", {"a": 1, "unused": "x"})
    assert sql == "SELECT @a AS a"
    assert [(p.name, p.type_, p.value) for p in parameters] == [("a", "INT64", 1)]


def test_a_missing_parameter_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(QueryFailed, match="not supplied: b"):
        prepare("SELECT @a, @b", {"a": 1})


def test_a_none_parameter_becomes_an_untyped_null_so_it_compares_with_any_type() -> None:
    sql, parameters = prepare("SELECT @n IS NULL AS is_null, amount = @n, '@n' FROM t -- @n", {"n": None})
    assert sql == "SELECT NULL IS NULL AS is_null, amount = NULL, '@n' FROM t -- @n"
    assert parameters == []


def test_prefixed_parameters_are_renamed_but_not_text_in_strings_or_comments() -> None:
    sql, parameters = prepare(
        "UPDATE t SET n = @n, note = '@n' WHERE id IN UNNEST(@ids) /* @n */ LIMIT @limit",
        {"n": 1, "ids": [1, 2], "limit": 5},
        prefix="s2_",
    )
    assert sql == ("UPDATE t SET n = @s2_n, note = '@n' WHERE id IN UNNEST(@s2_ids) /* @n */ LIMIT @s2_limit")
    assert sorted(p.name for p in parameters) == ["s2_ids", "s2_limit", "s2_n"]


# -- jobs: client-chosen ids, 409 Conflict, scripts ---------------------------------------------------------


class FakeJob:
    def __init__(
        self, job_id: str, rows: list[dict[str, Any]] | None = None, affected: int | None = None
    ) -> None:
        self.job_id = job_id
        self.rows = rows or []
        self.num_dml_affected_rows = affected

    def result(self, timeout: float | None = None, retry: Any = None) -> list[bigquery.Row]:
        return [bigquery.Row(tuple(r.values()), {k: i for i, k in enumerate(r)}) for r in self.rows]


class FakeClient:
    """Stands in for bigquery.Client. With conflict_first, the first jobs.insert raises 409 Conflict, as when
    BigQuery created the job but its answer was lost and the client's retry of the same job id collided."""

    def __init__(self, *, conflict_first: bool = False, rows: list[dict[str, Any]] | None = None) -> None:
        self.conflict_first = conflict_first
        self.rows = rows
        self.submitted: list[tuple[str, str, list[Any]]] = []
        self.fetched: list[str] = []
        self.jobs: dict[str, FakeJob] = {}

    def query(self, sql: str, *, job_config: bigquery.QueryJobConfig, job_id: str, **_: Any) -> FakeJob:
        self.submitted.append((job_id, sql, list(job_config.query_parameters)))
        job = self.jobs.setdefault(job_id, FakeJob(job_id, self.rows, affected=2))
        if self.conflict_first:
            self.conflict_first = False
            raise gexc.Conflict(f"Already Exists: Job local-project:US.{job_id}")
        return job

    def get_job(self, job_id: str, **_: Any) -> FakeJob:
        self.fetched.append(job_id)
        return self.jobs[job_id]


def test_conflict_on_job_insert_adopts_the_existing_job_instead_of_running_it_again() -> None:
    client = FakeClient(conflict_first=True)
    warehouse = BigQueryWarehouse("p", "US", client=client)
    assert warehouse.execute("DELETE FROM `d`.`t` WHERE id = @id", {"id": 7}) == 2
    assert len(client.submitted) == 1, "the statement was submitted once"
    ((job_id, _, parameters),) = client.submitted
    assert client.fetched == [job_id]
    assert job_id.startswith("convergence_query_")
    assert [(p.name, p.value) for p in parameters] == [("id", 7)]


def test_every_job_gets_a_fresh_client_chosen_id() -> None:
    client = FakeClient()
    warehouse = BigQueryWarehouse("p", "US", client=client)
    warehouse.execute("DELETE FROM `d`.`t` WHERE TRUE")
    warehouse.execute("DELETE FROM `d`.`t` WHERE TRUE")
    first, second = (job_id for job_id, _, _ in client.submitted)
    assert first != second and client.fetched == []


def test_query_rows_come_back_as_dicts() -> None:
    warehouse = BigQueryWarehouse(
        "p", "US", client=FakeClient(rows=[{"id": 1, "tags": ["a"], "s": {"x": 1}}])
    )
    assert warehouse.query("SELECT 1") == [{"id": 1, "tags": ["a"], "s": {"x": 1}}]


def test_run_atomically_is_one_transaction_script_with_per_statement_parameters() -> None:
    client = FakeClient(rows=[{"row_counts": [1, 2, 0]}])
    warehouse = BigQueryWarehouse("p", "US", client=client)
    counts = warehouse.run_atomically(
        [
            ("DELETE FROM `d`.`t` WHERE id = @id -- the first", {"id": 1}),
            ("INSERT INTO `d`.`t` (id, note) VALUES (@id, @note);", {"id": 10, "note": None}),
            ("CREATE TEMP TABLE x AS SELECT 1 AS one", None),
        ]
    )
    assert counts == [1, 2, 0]
    ((_, script, parameters),) = client.submitted
    count = "SET _convergence_row_counts = ARRAY_CONCAT(_convergence_row_counts, [IFNULL(@@row_count, 0)]);"
    assert script.splitlines() == [
        "DECLARE _convergence_row_counts ARRAY<INT64> DEFAULT [];",
        "BEGIN TRANSACTION;",
        "DELETE FROM `d`.`t` WHERE id = @s0_id -- the first",
        ";",
        count,
        "INSERT INTO `d`.`t` (id, note) VALUES (@s1_id, NULL)",
        ";",
        count,
        "CREATE TEMP TABLE x AS SELECT 1 AS one",
        ";",
        count,
        "COMMIT TRANSACTION;",
        "SELECT _convergence_row_counts AS row_counts;",
    ]
    assert [(p.name, p.value) for p in parameters] == [("s0_id", 1), ("s1_id", 10)]


def test_transaction_script_of_nothing_is_not_sent() -> None:
    client = FakeClient()
    assert BigQueryWarehouse("p", "US", client=client).run_atomically([]) == []
    assert transaction_script([])[1] == [] and client.submitted == []


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (gexc.NotFound("Not found: Table p:d.t"), NotFound),
        (gexc.Forbidden("Access Denied: Table p:d.t: ... or perhaps it does not exist."), NotFound),
        (
            gexc.Forbidden("Exceeded rate limits", errors=[{"reason": "rateLimitExceeded"}]),
            DependencyUnavailable,
        ),
        (gexc.Forbidden("Access Denied: Project p"), ConfigurationError),
        (gexc.InternalServerError("backend"), DependencyUnavailable),
        (gexc.ServiceUnavailable("down"), DependencyUnavailable),
        (gexc.TooManyRequests("slow down"), DependencyUnavailable),
        (requests.exceptions.ConnectionError("refused"), DependencyUnavailable),
        (
            gexc.BadRequest("Could not serialize access to table d.t due to concurrent update"),
            DependencyUnavailable,
        ),
        (gexc.BadRequest("Syntax error"), QueryFailed),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, type) else None,
)
def test_google_errors_map_to_platform_errors(error: Exception, expected: type) -> None:
    assert type(translate(error)) is expected


def test_rejected_data_is_a_bad_request() -> None:
    assert isinstance(translate(gexc.BadRequest("Error while reading data"), data_error=True), BadRequest)


# -- rows for load jobs -----------------------------------------------------------------------------------

FIELDS = [
    bigquery.SchemaField("id", "INTEGER", mode="REQUIRED"),
    bigquery.SchemaField("ts", "TIMESTAMP"),
    bigquery.SchemaField("amount", "FLOAT"),
    bigquery.SchemaField(
        "labels",
        "RECORD",
        mode="REPEATED",
        fields=[bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("n", "NUMERIC")],
    ),
]


def test_rows_become_ndjson_in_utc_with_nested_records() -> None:
    when = dt.datetime(2024, 1, 1, 18, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    payload = ndjson_rows(
        [
            {"id": 1, "ts": when, "amount": float("nan"), "labels": [{"key": "env", "n": Decimal("1.5")}]},
            {"id": 2},
        ],
        FIELDS,
    )
    assert payload.decode().splitlines() == [
        '{"id": 1, "ts": "2024-01-01T23:30:00+00:00", "amount": "NaN", "labels": [{"key": "env", "n": "1.5"}]}',
        '{"id": 2}',
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": 1, "colour": "red"}, "unknown columns colour"),
        ({"id": 1, "labels": [{"key": "k", "extra": 1}]}, "unknown columns labels[0].extra"),
        ({"ts": None}, "id is required"),
        ({"id": "seven"}, "id expects INT64"),
        ({"id": True}, "id expects INT64"),
        ({"id": 1, "labels": [None]}, "labels[0] is NULL"),
        ({"id": 1, "labels": {"key": "k"}}, "labels must be a list"),
    ],
)
def test_rows_that_do_not_fit_are_refused_before_loading(row: dict[str, Any], message: str) -> None:
    with pytest.raises(RowMismatch, match=message.replace("[", r"\[").replace("]", r"\]")):
        ndjson_rows([row], FIELDS)


# -- schema conversion: DDL -------------------------------------------------------------------------------

NESTED = TableSchema.model_validate(
    {
        "name": "usage",
        "description": "Usage rows, 'raw'",
        "fields": [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED", "description": "row id"},
            {"name": "recorded_at", "type": "TIMESTAMP", "mode": "REQUIRED"},
            {"name": "service", "type": "RECORD", "fields": [{"name": "id", "type": "STRING"}]},
            {
                "name": "credits",
                "type": "RECORD",
                "mode": "REPEATED",
                "fields": [
                    {"name": "name", "type": "STRING", "mode": "REQUIRED"},
                    {"name": "amount", "type": "FLOAT"},
                    {
                        "name": "parts",
                        "type": "RECORD",
                        "mode": "REPEATED",
                        "fields": [{"name": "n", "type": "NUMERIC"}],
                    },
                ],
            },
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
        ],
        "timePartitioning": {"type": "DAY", "field": "recorded_at"},
        "clustering": {"fields": ["id", "recorded_at"]},
    }
)


def test_nested_schema_becomes_create_table_with_structs_arrays_partitioning_and_clustering() -> None:
    assert create_table_ddl("acme", NESTED).splitlines() == [
        "CREATE TABLE `acme`.`usage` (",
        "  `id` INT64 NOT NULL OPTIONS(description='row id'),",
        "  `recorded_at` TIMESTAMP NOT NULL,",
        "  `service` STRUCT<`id` STRING>,",
        "  `credits` ARRAY<STRUCT<`name` STRING NOT NULL, `amount` FLOAT64, `parts` ARRAY<STRUCT<`n` NUMERIC>>>>,",
        "  `tags` ARRAY<STRING>",
        ")",
        "PARTITION BY TIMESTAMP_TRUNC(`recorded_at`, DAY)",
        "CLUSTER BY `id`, `recorded_at`",
        "OPTIONS(description='Usage rows, \\'raw\\'')",
    ]
    assert create_table_ddl("acme", NESTED, replace=True).startswith(
        "CREATE OR REPLACE TABLE `acme`.`usage` ("
    )


@pytest.mark.parametrize(
    ("column_type", "partitioning", "expected"),
    [
        ("DATE", {"type": "DAY", "field": "day"}, "PARTITION BY `day`"),
        ("DATE", {"type": "MONTH", "field": "day"}, "PARTITION BY DATE_TRUNC(`day`, MONTH)"),
        ("TIMESTAMP", {"type": "HOUR", "field": "day"}, "PARTITION BY TIMESTAMP_TRUNC(`day`, HOUR)"),
        ("DATETIME", {"type": "YEAR", "field": "day"}, "PARTITION BY DATETIME_TRUNC(`day`, YEAR)"),
        ("DATE", {"type": "DAY"}, "PARTITION BY _PARTITIONDATE"),
        ("DATE", {"type": "HOUR"}, "PARTITION BY TIMESTAMP_TRUNC(_PARTITIONTIME, HOUR)"),
    ],
)
def test_time_partitioning_of_each_kind(
    column_type: str, partitioning: dict[str, str], expected: str
) -> None:
    schema = TableSchema.model_validate(
        {"name": "t", "fields": [{"name": "day", "type": column_type}], "timePartitioning": partitioning}
    )
    assert expected in create_table_ddl("d", schema).splitlines()


@pytest.mark.parametrize(
    ("column_type", "partitioning"),
    [
        ("STRING", {"type": "DAY", "field": "day"}),
        ("DATE", {"type": "HOUR", "field": "day"}),
        ("DATE", {"field": "nope"}),
    ],
)
def test_impossible_partitioning_is_a_configuration_error(
    column_type: str, partitioning: dict[str, str]
) -> None:
    schema = TableSchema.model_validate(
        {"name": "t", "fields": [{"name": "day", "type": column_type}], "timePartitioning": partitioning}
    )
    with pytest.raises(ConfigurationError):
        create_table_ddl("d", schema)


@pytest.mark.parametrize(
    ("scope", "name"),
    [(s, n) for s in ("control", "tenant") for n in schema_names(s)],  # type: ignore[arg-type]
)
def test_every_shipped_schema_becomes_ddl_that_parses_as_googlesql(scope: str, name: str) -> None:
    schema = load_schema(scope, name)  # type: ignore[arg-type]
    (tree,) = sqlglot.parse(create_table_ddl("tenant", schema), read="bigquery")
    assert [column.name for column in tree.this.expressions] == schema.column_names
    assert schema.time_partitioning is not None and "PARTITION BY" in create_table_ddl("tenant", schema)


# -- the emulator's launcher ------------------------------------------------------------------------------


def test_bqemulator_bin_variable_chooses_the_program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    program = tmp_path / "bqemulator"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("BQEMULATOR_BIN", str(program))
    assert bqemulator_executable() == str(program)
    command = bigquery_emulator_command(9050, tmp_path, persistent=False)
    assert command[:2] == [str(program), "start"] and "--ephemeral" in command
    assert command[command.index("--rest-port") + 1] == "9050"


def test_a_missing_emulator_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BQEMULATOR_BIN", str(tmp_path / "absent"))
    with pytest.raises(DependencyUnavailable, match="install-bqemulator.sh"):
        bqemulator_executable()
