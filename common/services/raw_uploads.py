"""Uploads into a raw table that a template's source.files step loads: read as that step reads its files.

aws_cur_raw, azure_cost_raw and focus_raw are written by source.files steps (every column STRING, names
renamed by the step's `column_names` rule, its required columns present, its optional ones added as NULL),
and the template's later SQL relies on exactly that shape. A tenant who uploads its CUR, cost export or
FOCUS file into the raw table instead (having no integration) gets the same shape, so the template runs on
the upload as it would on the loaded files. The rules are read from the shipped templates themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pyarrow as pa

from common.errors import BadRequest, ConfigurationError, ConvergenceError, TerminalError
from common.sources.columns import ColumnNames
from common.sources.files import read_upload
from common.templates.loader import load_template, template_paths

FILE_STEP = "source.files"


@dataclass(frozen=True)
class RawTableRule:
    """How the source.files step of `template` reads the files it loads into `table`."""

    table: str
    template: str
    column_names: ColumnNames
    required: tuple[str, ...]
    optional: tuple[str, ...]


@cache
def raw_table_rules() -> dict[str, RawTableRule]:
    """Raw table → the reading rule of the shipped source.files step that loads it."""
    rules: dict[str, RawTableRule] = {}
    for provider, domain, name, _ in template_paths():
        try:
            template = load_template(provider, domain, name)
        except ConvergenceError:  # a broken template is refused where it is run, not on every upload
            continue
        for step in template.steps:
            config = step.config
            if step.ps_type != FILE_STEP or not isinstance(config.get("table"), str):
                continue
            rule = RawTableRule(
                table=config["table"],
                template=f"{provider}/{domain}/{name}",
                column_names=config.get("column_names", "snake_case"),
                required=tuple(config.get("required_columns") or ()),
                optional=tuple(config.get("optional_columns") or ()),
            )
            earlier = rules.setdefault(rule.table, rule)
            if (earlier.column_names, earlier.required) != (rule.column_names, rule.required):
                raise ConfigurationError(
                    f"templates {earlier.template} and {rule.template} load {rule.table} by different rules"
                )
    return rules


def read_raw_upload(table: str, kind: str, body: bytes) -> pa.Table | None:
    """The upload as the template loading `table` would have loaded it; None for any other table.

    A file the step would refuse (unreadable, lacking a required column) is refused with 400.
    """
    rule = raw_table_rules().get(table)
    if rule is None:
        return None
    try:
        return read_upload(
            body, kind, column_names=rule.column_names, required=rule.required, optional=rule.optional
        )
    except TerminalError as exc:
        message = f"{exc.message} (as {rule.template} reads {table})"
        raise BadRequest(
            message, code=exc.code if exc.code != "internal_error" else "invalid_upload"
        ) from None
