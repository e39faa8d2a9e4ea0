"""Reading billing files: formats, column names, folders, and the confinement of local paths to source roots."""

from __future__ import annotations

import csv
import gzip
import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.api_core import exceptions as gexc

from common.errors import TerminalError, TransientError
from common.settings import Settings
from common.sources.columns import keep_case, snake_case
from common.sources.files import read_location
from common.sources.gcs import GcsReader, translate

DATA = Path("/work/shared/data")
AWS_SAMPLE = DATA / "aws" / "cur_legacy_sample.csv"
AZURE_SAMPLE = DATA / "azure" / "ea_export_sample.csv"
FOCUS_SAMPLE = DATA / "focus" / "focus_1_0_sample.csv"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    return folder.resolve()


@pytest.fixture
def settings(root: Path, tmp_path: Path) -> Settings:
    return Settings(
        convergence_home=tmp_path / "home", file_source_roots=str(root), storage_emulator_host=None
    )


def sample_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def refused(location: str, settings: Settings, **options: object) -> TerminalError:
    with pytest.raises(TerminalError) as caught:
        read_location(location, settings, **options)  # type: ignore[arg-type]
    return caught.value


def column(table: pa.Table, name: str) -> list[str | None]:
    return table.column(name).to_pylist()


# -- column names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("lineItem/UnblendedCost", "line_item_unblended_cost"),
        ("bill/PayerAccountId", "bill_payer_account_id"),
        ("identity/LineItemId", "identity_line_item_id"),
        ("product/servicecode", "product_servicecode"),
        ("savingsPlan/SavingsPlanEffectiveCost", "savings_plan_savings_plan_effective_cost"),
        ("resourceTags/user:Name", "resource_tags_user_name"),
        ("reservation/ReservationARN", "reservation_reservation_a_r_n"),
        ("CostInBillingCurrency", "cost_in_billing_currency"),
        ("BillingCurrencyCode", "billing_currency_code"),
        ("line_item_unblended_cost", "line_item_unblended_cost"),
        ("x_ServiceCode", "x_service_code"),
        ("2023 cost", "_2023_cost"),
    ],
)
def test_snake_case_names_match_what_aws_cur_2_and_athena_call_them(raw: str, expected: str) -> None:
    assert snake_case(raw) == expected


def test_keep_replaces_only_characters_a_warehouse_refuses() -> None:
    assert keep_case("lineItem/UnblendedCost") == "lineItem_UnblendedCost"
    assert keep_case("resourceTags/user:Name") == "resourceTags_user_Name"
    assert keep_case("CostInBillingCurrency") == "CostInBillingCurrency"


# -- the real samples ------------------------------------------------------------------------------------


def test_legacy_cur_sample_lands_every_row_with_snake_case_names_and_text_values(
    root: Path, settings: Settings
) -> None:
    shutil.copy(AWS_SAMPLE, root / "cur.csv")
    loaded = read_location(str(root / "cur.csv"), settings, required=["line_item_unblended_cost"])
    table = loaded.table
    raw = sample_rows(AWS_SAMPLE)
    assert table.num_rows == len(raw) == 1281
    assert {"line_item_unblended_cost", "bill_payer_account_id", "identity_line_item_id", "product_servicecode",
            "savings_plan_savings_plan_effective_cost"} <= set(table.column_names)  # fmt: skip
    assert all(field.type == pa.string() for field in table.schema)
    assert column(table, "line_item_unblended_cost") == [r["lineItem/UnblendedCost"] or None for r in raw]
    assert math.isclose(
        math.fsum(float(v or 0) for v in column(table, "line_item_unblended_cost")),
        1.6823086974,
        abs_tol=1e-12,
    )
    assert set(column(table, "_source_file")) == {str(root / "cur.csv")}
    assert loaded.files == [str(root / "cur.csv")]


def test_azure_sample_keeps_quoted_tags_and_exponent_costs_as_written(root: Path, settings: Settings) -> None:
    shutil.copy(AZURE_SAMPLE, root / "azure.csv")
    table = read_location(str(root / "azure.csv"), settings).table
    assert table.num_rows == 27
    assert column(table, "tags")[0] == '"tagA": "valueA","tagB": "valueB","tagC": "valueC"'
    assert column(table, "additional_info")[0].startswith('{  "additional": "meta-data"')
    assert column(table, "cost_in_billing_currency")[1] == "5.64902E-05"
    assert set(column(table, "billing_currency_code")) == {"CAD"}


def test_focus_sample_reads_literal_null_and_empty_fields_as_null(root: Path, settings: Settings) -> None:
    shutil.copy(FOCUS_SAMPLE, root / "focus.csv")
    table = read_location(str(root / "focus.csv"), settings, column_names="keep").table
    raw = sample_rows(FOCUS_SAMPLE)
    assert table.num_rows == 1000
    assert (
        column(table, "AvailabilityZone").count(None)
        == sum(r["AvailabilityZone"] == "NULL" for r in raw)
        == 893
    )
    nulls = sum(table.column(name).null_count for name in table.column_names)
    assert nulls == sum(v in ("NULL", "") for r in raw for v in r.values())
    assert "NULL" not in {v for name in table.column_names for v in column(table, name)}


# -- formats ---------------------------------------------------------------------------------------------


def cur2_parquet(path: Path, rows: list[dict[str, str]]) -> None:
    """A CUR 2.0-style Parquet file: snake_case names, typed values, resource tags as a map."""
    table = pa.table(
        {
            "line_item_usage_start_date": pa.array(
                [r["lineItem/UsageStartDate"] for r in rows], pa.string()
            ).cast(pa.timestamp("ms", tz="UTC")),
            "line_item_unblended_cost": pa.array([float(r["lineItem/UnblendedCost"] or 0) for r in rows]),
            "line_item_usage_amount": pa.array([float(r["lineItem/UsageAmount"] or 0) for r in rows]),
            "resource_tags": pa.array(
                [[("user_team", "core")] for _ in rows], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    pq.write_table(table, path)


def test_cur2_parquet_keeps_its_names_and_lands_values_as_text(root: Path, settings: Settings) -> None:
    raw = sample_rows(AWS_SAMPLE)[:50]
    cur2_parquet(root / "part-0.snappy.parquet", raw)
    table = read_location(str(root / "part-0.snappy.parquet"), settings).table
    assert table.column_names == ["line_item_usage_start_date", "line_item_unblended_cost", "line_item_usage_amount",
                                  "resource_tags", "_source_file"]  # fmt: skip
    assert all(field.type == pa.string() for field in table.schema)
    costs = [float(v) for v in column(table, "line_item_unblended_cost")]
    assert costs == [float(r["lineItem/UnblendedCost"] or 0) for r in raw]
    assert column(table, "line_item_usage_start_date")[0].startswith(raw[0]["lineItem/UsageStartDate"][:10])
    assert json.loads(column(table, "resource_tags")[0]) == {"user_team": "core"}


def test_ndjson_lands_numbers_and_nested_values_as_text(root: Path, settings: Settings) -> None:
    lines = [
        {
            "lineItem/UnblendedCost": 0.25,
            "lineItem/UsageAccountId": "111122223333",
            "resourceTags": {"env": "prod"},
        },
        {"lineItem/UnblendedCost": 5.64902e-05, "lineItem/LineItemType": "Tax", "flag": True},
    ]
    (root / "cur.ndjson").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    table = read_location(str(root / "cur.ndjson"), settings).table
    assert table.num_rows == 2
    assert column(table, "line_item_unblended_cost") == ["0.25", "5.64902e-05"]
    assert column(table, "line_item_line_item_type") == [None, "Tax"]
    assert column(table, "resource_tags") == ['{"env":"prod"}', None]
    assert column(table, "flag") == [None, "true"]


def test_ndjson_with_cur2_names_reads_like_the_legacy_csv_it_came_from(
    root: Path, settings: Settings
) -> None:
    raw = sample_rows(AWS_SAMPLE)[:100]
    with (root / "cur2.jsonl").open("w") as out:
        for row in raw:
            out.write(json.dumps({snake_case(k): v for k, v in row.items() if v != ""}) + "\n")
    shutil.copy(AWS_SAMPLE, root / "legacy.csv")
    from_ndjson = read_location(str(root / "cur2.jsonl"), settings).table
    from_csv = read_location(str(root / "legacy.csv"), settings).table.slice(0, 100)
    assert from_ndjson.num_rows == 100
    for name in from_ndjson.column_names:
        if name != "_source_file":
            assert column(from_ndjson, name) == column(from_csv, name), name


def test_gzip_csv_reads_like_the_plain_file(root: Path, settings: Settings) -> None:
    shutil.copy(AZURE_SAMPLE, root / "plain.csv")
    (root / "packed.csv.gz").write_bytes(gzip.compress(AZURE_SAMPLE.read_bytes()))
    plain = read_location(str(root / "plain.csv"), settings).table.drop_columns(["_source_file"])
    packed = read_location(str(root / "packed.csv.gz"), settings).table.drop_columns(["_source_file"])
    assert packed.equals(plain)


def test_quoted_empty_field_is_null_like_an_unquoted_one(root: Path, settings: Settings) -> None:
    (root / "c.csv").write_text('a,b,c\n"",NULL,null\nx,"y",\n')
    table = read_location(str(root / "c.csv"), settings).table
    assert column(table, "a") == [None, "x"]
    assert column(table, "b") == [None, "y"]
    assert column(table, "c") == [None, None]


def test_unknown_extension_needs_a_declared_format(root: Path, settings: Settings) -> None:
    (root / "export.txt").write_text("Cost\n1.5\n")
    assert refused(str(root / "export.txt"), settings).code == "unsupported_format"
    table = read_location(str(root / "export.txt"), settings, declared="csv").table
    assert column(table, "cost") == ["1.5"]


def test_ragged_csv_is_invalid_source_file_naming_it(root: Path, settings: Settings) -> None:
    (root / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    error = refused(str(root / "bad.csv"), settings)
    assert error.code == "invalid_source_file"
    assert "bad.csv" in error.message


def test_ndjson_line_that_is_not_an_object_is_refused_with_its_line_number(
    root: Path, settings: Settings
) -> None:
    (root / "rows.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    error = refused(str(root / "rows.jsonl"), settings)
    assert error.code == "invalid_source_file"
    assert "line 2" in error.message


# -- folders ---------------------------------------------------------------------------------------------


def test_folder_of_two_files_is_stacked_in_name_order_with_columns_unioned(
    root: Path, settings: Settings
) -> None:
    folder = root / "cur" / "2023-11"
    (folder / "late").mkdir(parents=True)
    (folder / "a.csv").write_text("lineItem/UnblendedCost,lineItem/CurrencyCode\n1.0,USD\n2.0,USD\n")
    (folder / "late" / "b.csv.gz").write_bytes(
        gzip.compress(b"lineItem/UnblendedCost,product/region\n3.0,eu-west-1\n")
    )
    (folder / "cur-Manifest.json").write_text('{"reportKeys": []}')
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.csv").write_text("x\n1\n")
    loaded = read_location(str(root / "cur"), settings)
    table = loaded.table
    assert loaded.files == [str(folder / "a.csv"), str(folder / "late" / "b.csv.gz")]
    assert column(table, "line_item_unblended_cost") == ["1.0", "2.0", "3.0"]
    assert column(table, "line_item_currency_code") == ["USD", "USD", None]
    assert column(table, "product_region") == [None, None, "eu-west-1"]
    assert column(table, "_source_file") == [str(folder / "a.csv")] * 2 + [str(folder / "late" / "b.csv.gz")]


def test_folder_without_readable_files_is_source_empty_naming_it(root: Path, settings: Settings) -> None:
    (root / "empty").mkdir()
    (root / "empty" / "manifest.json").write_text("{}")
    error = refused(str(root / "empty"), settings)
    assert error.code == "source_empty"
    assert str(root / "empty") in error.message


def test_path_that_does_not_exist_under_a_root_is_source_not_found(root: Path, settings: Settings) -> None:
    assert refused(str(root / "nope" / "cur.csv"), settings).code == "source_not_found"


def test_relative_path_is_read_from_the_first_source_root(root: Path, settings: Settings) -> None:
    (root / "tenant").mkdir()
    (root / "tenant" / "c.csv").write_text("a\n1\n")
    assert column(read_location("tenant/c.csv", settings).table, "_source_file") == [
        str(root / "tenant" / "c.csv")
    ]


def test_every_root_of_file_source_roots_may_be_read(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for folder in (first, second):
        folder.mkdir()
        (folder / "c.csv").write_text("a\n1\n")
    settings = Settings(convergence_home=tmp_path / "home", file_source_roots=f"{first}:{second}")
    assert read_location(str(second / "c.csv"), settings).table.num_rows == 1
    assert refused(str(tmp_path / "home"), settings).code == "source_forbidden"


# -- columns ---------------------------------------------------------------------------------------------


def test_missing_required_columns_are_named_with_the_file(root: Path, settings: Settings) -> None:
    (root / "c.csv").write_text("lineItem/UnblendedCost\n1\n")
    error = refused(str(root / "c.csv"), settings, required=["line_item_unblended_cost", "line_item_currency_code",
                                                              "bill_payer_account_id"])  # fmt: skip
    assert error.code == "missing_columns"
    assert "line_item_currency_code, bill_payer_account_id" in error.message
    assert "c.csv" in error.message


def test_missing_optional_columns_are_added_as_null_text(root: Path, settings: Settings) -> None:
    (root / "c.csv").write_text("Cost\n1\n2\n")
    table = read_location(str(root / "c.csv"), settings, optional=["cost", "line_item_resource_id"]).table
    assert table.column_names == ["cost", "line_item_resource_id", "_source_file"]
    assert table.schema.field("line_item_resource_id").type == pa.string()
    assert column(table, "line_item_resource_id") == [None, None]


def test_columns_colliding_after_renaming_are_refused_naming_them(root: Path, settings: Settings) -> None:
    (root / "c.csv").write_text("lineItem/UnblendedCost,line_item_unblended_cost\n1,2\n")
    error = refused(str(root / "c.csv"), settings)
    assert error.code == "column_collision"
    assert "'lineItem/UnblendedCost'" in error.message and "'line_item_unblended_cost'" in error.message


def test_files_of_a_folder_naming_a_column_in_different_case_collide(root: Path, settings: Settings) -> None:
    (root / "cur").mkdir()
    (root / "cur" / "a.csv").write_text("Cost\n1\n")
    (root / "cur" / "b.csv").write_text("cost\n2\n")
    error = refused(str(root / "cur"), settings, column_names="keep")
    assert error.code == "column_collision"
    assert "Cost/cost" in error.message


def test_names_bigquery_reserves_are_prefixed(root: Path, settings: Settings) -> None:
    (root / "c.csv").write_text("_PARTITIONTIME,cost\n2024-01-01,1\n")
    assert (
        read_location(str(root / "c.csv"), settings, column_names="keep").table.column_names[0]
        == "x_PARTITIONTIME"
    )


def test_a_source_column_named_like_the_added_source_file_column_collides(
    root: Path, settings: Settings
) -> None:
    (root / "c.csv").write_text("_source_file,a\nx,1\n")
    assert refused(str(root / "c.csv"), settings).code == "column_collision"


# -- confinement to the source roots ---------------------------------------------------------------------


def test_dot_dot_escape_from_the_root_is_forbidden(root: Path, settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "secret.csv").write_text("password\nhunter2\n")
    for location in (f"{root}/../secret.csv", "../secret.csv", f"file://{root}/../secret.csv"):
        error = refused(location, settings)
        assert error.code == "source_forbidden", location
        assert "hunter2" not in error.message


def test_server_files_are_forbidden_whether_or_not_they_exist(settings: Settings) -> None:
    assert refused("/etc/passwd", settings, declared="csv").code == "source_forbidden"
    assert refused("/etc/no-such-file.csv", settings).code == "source_forbidden"
    assert refused("/", settings).code == "source_forbidden"


def test_symlinked_file_pointing_outside_the_root_is_forbidden(
    root: Path, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "outside.csv").write_text("a\n1\n")
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    assert refused(str(root / "link.csv"), settings).code == "source_forbidden"


def test_symlink_inside_a_folder_pointing_outside_is_forbidden(
    root: Path, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.csv").write_text("a\n1\n")
    (root / "cur").mkdir()
    (root / "cur" / "ok.csv").write_text("a\n2\n")
    (root / "cur" / "escape").symlink_to(tmp_path / "elsewhere")
    assert refused(str(root / "cur"), settings).code == "source_forbidden"
    (root / "cur" / "escape").unlink()
    (root / "cur" / "x.csv").symlink_to(tmp_path / "elsewhere" / "x.csv")
    assert refused(str(root / "cur"), settings).code == "source_forbidden"


def test_symlinked_root_content_pointing_inside_the_roots_is_read(root: Path, settings: Settings) -> None:
    (root / "real").mkdir()
    (root / "real" / "c.csv").write_text("a\n1\n")
    (root / "alias").symlink_to(root / "real")
    (root / "real" / "loop").symlink_to(root / "real")
    assert column(read_location(str(root / "alias"), settings).table, "a") == ["1"]


def test_other_url_schemes_are_refused(settings: Settings) -> None:
    error = refused("s3://bucket/cur/", settings)
    assert error.code == "unsupported_location"
    assert refused("https://example.com/cur.csv", settings).code == "unsupported_location"


# -- Cloud Storage errors --------------------------------------------------------------------------------


def test_cloud_storage_outage_is_transient_and_missing_objects_terminal() -> None:
    assert isinstance(translate(gexc.ServiceUnavailable("down"), "gs://b/x"), TransientError)
    assert isinstance(translate(gexc.TooManyRequests("slow down"), "gs://b/x"), TransientError)
    missing = translate(gexc.NotFound("no bucket"), "gs://b/x")
    assert isinstance(missing, TerminalError) and not missing.retryable and missing.code == "source_not_found"
    assert translate(gexc.Forbidden("denied"), "gs://b/x").code == "source_forbidden"


def test_unreachable_cloud_storage_is_transient(settings: Settings) -> None:
    from convergence.emulators.process import free_port

    nowhere = Settings(
        storage_emulator_host=f"http://127.0.0.1:{free_port()}", file_source_roots=settings.file_source_roots
    )
    reader = GcsReader.from_settings(nowhere, deadline=1.0)
    with pytest.raises(TransientError):
        read_location("gs://billing-bucket/cur/", nowhere, gcs=lambda: reader)


def test_malformed_gs_uri_is_refused(settings: Settings) -> None:
    assert refused("gs://UPPER/cur.csv", settings).code == "invalid_location"
