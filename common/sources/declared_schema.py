"""An upload fitted to a table's definition: Arrow of exactly the table's types, or a 400 saying why not.

The definition is the one configs/schemas/tenant/ declares for the table, or, for a table nobody declared, the
one the table already has. The rules are the same for CSV, NDJSON and Parquet (read by upload_records):

- Columns are matched by name, ignoring case as BigQuery does. Columns the table lacks are refused, all of
  them named (`upload_unknown_columns`); a REQUIRED column the upload lacks is refused
  (`upload_missing_columns`); a NULLABLE one is NULL, a REPEATED one an empty array (BigQuery has no NULL
  arrays).
- TIMESTAMP: ISO 8601 with `Z` or an offset (`2025-11-15T00:30:00Z`, `2025-11-15 01:30:00+01:00`), or
  BigQuery's own `2025-11-15 00:30:00 UTC`; without a zone it is UTC. It is stored in UTC.
- DATE `YYYY-MM-DD`; DATETIME and TIME ISO 8601 without a zone.
- NUMERIC and BIGNUMERIC are decimals, never floats: `0.1` stays one tenth. More decimal places than the type
  holds (9, 38) are rounded half away from zero, as BigQuery rounds; too many integer digits are refused.
- INT64 whole numbers in range; FLOAT64 any number (`NaN`, `Infinity` too); BOOL `true/false`, `1/0`,
  `yes/no`; STRING text (a number is kept as written); BYTES base64 text.
- JSON: in NDJSON the value itself; in CSV and Parquet the cell holds JSON text.
- CSV: a cell of a RECORD or REPEATED column holds its value as JSON (`{"id": "X", "description": "Y"}`,
  `[{"key": "env", "value": "prod"}]`), as BigQuery's JSON export writes them; an empty cell is NULL.

A value that does not fit is refused (`upload_type_mismatch`) naming its row (the N-th data row: the CSV
header does not count, nor blank NDJSON lines), its column and the type expected. Nothing is loaded then.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import pyarrow as pa
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from common.errors import BadRequest, ConfigurationError
from common.sources.columns import rename_columns
from common.sources.upload_records import UploadRecords
from common.warehouse.schema import SchemaField, TableSchema

MAX_REPORTED_ERRORS = 10
_ROW_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
_DECIMALS = decimal.Context(prec=100, rounding=decimal.ROUND_HALF_UP)  # half away from zero
_SHORT_OFFSET = re.compile(r"([+-]\d\d)$")


@dataclass(frozen=True)
class FittedUpload:
    """The upload as Arrow of the table's types, and the upload's column names that were matched to others."""

    data: pa.Table
    renamed: dict[str, str]


# -- values -------------------------------------------------------------------------------------------------


def _refuse(reason: str) -> PydanticCustomError:
    """A value's refusal, as the validators below raise it (its reason ends up in the 400)."""
    return PydanticCustomError("upload_value", reason)


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise _refuse("a boolean is not a number")
    return value


def _decimal_input(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))  # the float's shortest form, not its binary expansion
    return _not_bool(value)


def _decimal_type(scale: int, integer_digits: int, name: str) -> Callable[[Decimal], Decimal]:
    exponent = Decimal(1).scaleb(-scale)
    limit = Decimal(10) ** integer_digits

    def fit(value: Decimal) -> Decimal:
        rounded = _DECIMALS.quantize(value, exponent)
        if abs(rounded) >= limit:
            raise _refuse(f"{name} holds at most {integer_digits} digits before the point")
        return rounded

    return fit


def _temporal_text(value: Any) -> Any:
    if isinstance(value, int | float | Decimal):
        raise _refuse("a number is not a date or time; write it in ISO 8601")
    return value


def _timestamp_input(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text[-4:].upper() == " UTC":  # BigQuery's own form: 2025-11-15 00:30:00 UTC
            text = text[:-4] + "Z"
        return _SHORT_OFFSET.sub(r"\1:00", text) if "T" in text or " " in text else text
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC)
    return _temporal_text(value)


def _in_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _without_zone(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        raise _refuse("DATETIME has no time zone; use a TIMESTAMP column for an instant")
    return value


def _base64_input(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _refuse("BYTES are written as base64") from None
    return value


def _json_scalar(value: Any) -> Any:
    """What json.dumps cannot write itself: decimals (as numbers) and Parquet's typed values (as text)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise _refuse(f"a {type(value).__name__} has no JSON form")


def _json_input(text: bool) -> Callable[[Any], str]:
    """A JSON column's value as compact JSON text; with `text`, a str is JSON text to check, not a string."""

    def encode(value: Any) -> str:
        if text and isinstance(value, str):
            try:
                value = json.loads(value, parse_float=Decimal)
            except ValueError:
                raise _refuse("the cell does not hold JSON text") from None
        try:
            return json.dumps(
                value, default=_json_scalar, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except ValueError:
            raise _refuse("JSON has no NaN or Infinity") from None

    return encode


def _json_cell(value: Any) -> Any:
    """A RECORD or REPEATED value written as JSON text (how CSV carries them) parsed into its value."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value, parse_float=Decimal)
    except ValueError:
        raise _refuse(
            "the cell does not hold JSON (a RECORD is an object, a REPEATED column an array)"
        ) from None


def _no_null_array(value: Any) -> Any:
    return [] if value is None else value


_SCALARS: dict[str, Any] = {
    "STRING": str,
    "INT64": Annotated[int, BeforeValidator(_not_bool), Field(ge=-(2**63), le=2**63 - 1)],
    "FLOAT64": Annotated[float, BeforeValidator(_not_bool)],
    "NUMERIC": Annotated[
        Decimal, BeforeValidator(_decimal_input), AfterValidator(_decimal_type(9, 29, "NUMERIC"))
    ],
    "BIGNUMERIC": Annotated[
        Decimal, BeforeValidator(_decimal_input), AfterValidator(_decimal_type(38, 38, "BIGNUMERIC"))
    ],
    "BOOL": bool,
    "DATE": Annotated[dt.date, BeforeValidator(_temporal_text)],
    "TIMESTAMP": Annotated[dt.datetime, BeforeValidator(_timestamp_input), AfterValidator(_in_utc)],
    "DATETIME": Annotated[dt.datetime, BeforeValidator(_temporal_text), AfterValidator(_without_zone)],
    "TIME": Annotated[dt.time, BeforeValidator(_temporal_text)],
    "BYTES": Annotated[bytes, BeforeValidator(_base64_input)],
}


# -- the row model ------------------------------------------------------------------------------------------


def _value_type(field: SchemaField, *, top: bool, text_json: bool) -> Any:
    base = field.base_type()
    if base == "STRUCT":
        return _record_model(f"{field.name}_record", field.fields, top=False, text_json=text_json)
    if base == "JSON":
        return Annotated[str, BeforeValidator(_json_input(text_json and top))]
    return _SCALARS[base]


def _annotation(field: SchemaField, *, top: bool, text_json: bool) -> tuple[Any, dict[str, Any]]:
    """The pydantic annotation of one column and how it defaults (no default: REQUIRED)."""
    value = _value_type(field, top=top, text_json=text_json)
    nested = field.mode == "REPEATED" or field.base_type() == "STRUCT"
    if field.mode == "REPEATED":
        annotation, default = (
            Annotated[list[value], BeforeValidator(_no_null_array)],
            {"default_factory": list},
        )
    elif field.mode == "REQUIRED":
        annotation, default = value, {}
    else:
        annotation, default = value | None, {"default": None}
    if top and nested:  # a CSV cell (or a text column) holding the value as JSON
        annotation = Annotated[annotation, BeforeValidator(_json_cell)]
    return annotation, default


def _record_model(name: str, fields: Sequence[SchemaField], *, top: bool, text_json: bool) -> type[BaseModel]:
    # Columns are f0, f1, ... aliased to their names, so a column may be called anything (`json`, `_id`).
    definitions: dict[str, Any] = {}
    for index, field in enumerate(fields):
        annotation, default = _annotation(field, top=top, text_json=text_json)
        definitions[f"f{index}"] = (annotation, Field(alias=field.name, **default))
    return create_model(name, __config__=_ROW_CONFIG, **definitions)


_ADAPTERS: dict[tuple[str, bool], TypeAdapter] = {}


def _rows_adapter(schema: TableSchema, text_json: bool) -> TypeAdapter:
    key = (schema.model_dump_json(), text_json)
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        if len(_ADAPTERS) >= 64:
            _ADAPTERS.clear()
        model = _record_model(f"{schema.name or 'table'}_row", schema.fields, top=True, text_json=text_json)
        adapter = _ADAPTERS[key] = TypeAdapter(list[model])
    return adapter


def arrow_schema(schema: TableSchema) -> pa.Schema:
    """The Arrow schema of a table's rows in a load."""
    return pa.schema([pa.field(field.name, field.arrow_type()) for field in schema.fields])


# -- refusals -----------------------------------------------------------------------------------------------


_HINTS = {
    "TIMESTAMP": " (ISO 8601 with Z or an offset, or YYYY-MM-DD HH:MM:SS UTC)",
    "DATE": " (YYYY-MM-DD)",
}


def _type_name(field: SchemaField, *, whole_array: bool) -> str:
    base = "RECORD" if field.base_type() == "STRUCT" else field.base_type()
    return f"REPEATED {base}" if field.mode == "REPEATED" and whole_array else base


def _given(value: Any) -> str:
    """What a refused value was, as a type and a short rendering of it."""
    if isinstance(value, bool):
        return f"BOOL {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"STRING {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, int):
        return f"INT64 {value}"
    if isinstance(value, float | Decimal):
        return f"FLOAT64 {value}"
    if isinstance(value, dict):
        return "a RECORD (JSON object)"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP {value.isoformat()}"
    if isinstance(value, dt.date):
        return f"DATE {value.isoformat()}"
    return type(value).__name__


def _locate(schema: TableSchema, loc: Sequence[Any]) -> tuple[str, SchemaField | None, bool]:
    """A pydantic error location in a row: (column path, its field, whether the error is on a whole array)."""
    path, fields, field = "", schema.fields, None
    whole_array = False
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            whole_array = False
            continue
        field = next((f for f in fields if f.name == part), None)
        path += f".{part}" if path else str(part)
        if field is None:
            return path, None, False
        fields, whole_array = field.fields, field.mode == "REPEATED"
    return path, field, whole_array


def _problem(schema: TableSchema, error: Any) -> dict[str, Any]:
    row, *loc = error["loc"]
    column, field, whole_array = _locate(schema, loc)
    kind, given = error["type"], error.get("input")
    if field is None:  # a key no field of the RECORD has
        return {
            "row": row + 1,
            "column": column,
            "expected": None,
            "message": f"{column} is not a field of its RECORD",
        }
    expected = _type_name(field, whole_array=whole_array)
    if kind == "missing":
        message = f"{column} is REQUIRED and has no value"
    elif given is None:
        message = (
            f"{column} cannot hold NULL inside an array"
            if field.mode == "REPEATED"
            else f"{column} is REQUIRED, got NULL"
        )
    else:
        reason = str(error["msg"])
        if reason[1:2].islower():  # pydantic's "Input should be ..." inside a sentence, not an acronym
            reason = reason[:1].lower() + reason[1:]
        message = f"{column}: expected {expected}{_HINTS.get(expected, '')}, got {_given(given)} ({reason})"
    return {"row": row + 1, "column": column, "expected": expected, "message": message}


def _type_mismatch(schema: TableSchema, table: str, exc: ValidationError) -> BadRequest:
    errors = exc.errors(include_url=False)
    problems = [_problem(schema, error) for error in errors[:MAX_REPORTED_ERRORS]]
    first = problems[0]
    more = f" ({len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return BadRequest(
        f"the upload does not fit {table}: row {first['row']}, column {first['message']}{more};"
        " nothing was loaded",
        code="upload_type_mismatch",
        row=first["row"],
        column=first["column"],
        expected=first["expected"],
        problems=problems,
        problem_count=len(errors),
    )


# -- columns ------------------------------------------------------------------------------------------------


def _column_names(records: UploadRecords, schema: TableSchema, table: str, origin: str) -> dict[str, str]:
    """Each upload column → the table column it fills, matched ignoring case; unknown or missing refused."""
    safe = rename_columns([name.strip() for name in records.names], "keep", "the upload")
    by_lower = {field.name.lower(): field.name for field in schema.fields}
    unknown = [name for name, new in zip(records.names, safe, strict=True) if new.lower() not in by_lower]
    if unknown:
        raise BadRequest(
            f"{table} has no column {', '.join(unknown)} ({origin}); nothing was loaded",
            code="upload_unknown_columns",
            unknown_columns=unknown,
        )
    matched = {name: by_lower[new.lower()] for name, new in zip(records.names, safe, strict=True)}
    present = set(matched.values())
    missing = [f.name for f in schema.fields if f.mode == "REQUIRED" and f.name not in present]
    if missing:
        raise BadRequest(
            f"the upload lacks REQUIRED columns of {table}: {', '.join(missing)} ({origin});"
            " nothing was loaded",
            code="upload_missing_columns",
            missing_columns=missing,
        )
    return matched


def _named_rows(records: UploadRecords, matched: dict[str, str], schema: TableSchema) -> list[dict[str, Any]]:
    rows = records.rows
    if any(name != column for name, column in matched.items()):
        rows = [{matched[name]: value for name, value in row.items()} for row in rows]
    if records.format == "csv":
        # A quoted empty cell is an empty string: for any type but STRING that is as good as NULL.
        typed = [
            f.name for f in schema.fields if f.mode != "REPEATED" and f.base_type() not in ("STRING", "JSON")
        ]
        for row in rows:
            for name in typed:
                if row.get(name) == "":
                    row[name] = None
    return rows


def fit_upload(records: UploadRecords, schema: TableSchema, *, table: str, origin: str) -> FittedUpload:
    """The upload's rows as Arrow of exactly `schema`'s types, checked whole before anything is loaded.

    `origin` says where the definition comes from, for refusals (e.g. "as configs/schemas/... declares it").
    """
    if not records.names:
        raise BadRequest("the upload has no columns", code="empty_upload")
    matched = _column_names(records, schema, table, origin)
    rows = _named_rows(records, matched, schema)
    adapter = _rows_adapter(schema, text_json=records.format != "ndjson")
    try:
        values = adapter.dump_python(adapter.validate_python(rows), by_alias=True)
    except ValidationError as exc:
        raise _type_mismatch(schema, table, exc) from None
    data = pa.Table.from_pylist(values, schema=arrow_schema(schema))
    return FittedUpload(data, {name: column for name, column in matched.items() if name != column})


# -- definitions compared -----------------------------------------------------------------------------------


def _signature(field: SchemaField) -> str:
    try:
        return field.signature()
    except ConfigurationError:
        return field.type.upper()


def schema_differences(existing: TableSchema, declared: TableSchema) -> list[str]:
    """How an existing table's columns differ from a definition, one sentence each; empty when they agree.

    Column types are compared with their nested names, not their precision or NULLABLE/REQUIRED.
    """
    have = {field.name.lower(): field for field in existing.fields}
    differences = []
    for field in declared.fields:
        current = have.pop(field.name.lower(), None)
        if current is None:
            differences.append(f"{field.name} is missing")
        elif _signature(current) != _signature(field):
            differences.append(f"{field.name} is {_signature(current)}, declared {_signature(field)}")
    differences.extend(f"{field.name} is not declared" for field in have.values())
    return differences
