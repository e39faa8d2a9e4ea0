"""Templates written in the described system's shape, translated into the typed shape when they load.

Tenants migrating from the described system keep their YAML: the loader recognises its shape
(`looks_described`) and hands it to `translate`, which returns the same template in the typed shape
(`common.templates.models.PipelineTemplate`, the one truth every later check and run uses) plus warnings
about what it accepted but does not do as written. docs/templates.md has the translation table.

- `pipeline_name` becomes the template's `name` (and its `description` when it has none). A run's
  pipeline_id is always `{tenant_id}-{provider}-{domain}-{template_name}`; another written pipeline_id is
  ignored, with a warning.
- `variables` written as plain values get their type from the value (a number is an int, true/false a bool,
  a YAML date a date, anything else a string); the typed long form is accepted too.
- A step's `config:` is merged into the step, `description` names a step without `name`, `timeout_minutes`
  becomes `timeout_seconds` (at most 540), `trigger: on_completion` is `always`, `retry_policy` is ignored
  (the bus retries transient failures).
- `source.query` becomes `sql` (`common.templates.described_sql`: quoted placeholders become parameters,
  tables the tenant's own); `destination.dataset_type` and the `bq_project_id`s are ignored (a step writes
  only into its tenant's dataset), `write_mode` WRITE_TRUNCATE/WRITE_APPEND map onto truncate/append and
  WRITE_EMPTY is refused (a step here must be safe to run again).
- Email steps: `to_emails` is `to`, `message` (or `body_template`) is `body`, `subject_template` is
  `subject`; a step without a subject gets one naming the pipeline and the day.

Every problem is an InvalidTemplate (400) naming the template, the step and the field as written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.settings import CONFIGS_DIR
from common.templates.described_sql import SqlRefused, translate_fragment, translate_query
from common.templates.models import MAX_STEP_SECONDS, SQL_KEYS, STANDARD_PIPELINE_ID
from common.templates.step_checks import InvalidTemplate, StepProblem

EMAIL_TYPES = frozenset({"shared.email_notification", "notify_systems.email_notification"})
# The described system's ps_types with no step here, and what takes their place.
NO_EQUIVALENT = {
    "shared.slack_notification": "notifications are sent by email (notify.email)",
    "notify_systems.slack_notification": "notifications are sent by email (notify.email)",
    "aws.s3_to_bigquery": "files are read by source.files from an integration's location",
    "aws.s3_data_loader": "files are read by source.files from an integration's location",
    "customer.onboarding": "organisations are onboarded by POST /api/v1/organizations/onboard",
    "setup.tenants.onboarding": "organisations are onboarded by POST /api/v1/organizations/onboard",
    "setup.organizations.onboarding": "organisations are onboarded by POST /api/v1/organizations/onboard",
    "setup.initial": "the platform is bootstrapped by POST /api/v1/admin/bootstrap",
}
WRITE_MODES = {
    "write_truncate": "truncate",
    "truncate": "truncate",
    "overwrite": "truncate",
    "write_append": "append",
    "append": "append",
    "replace_partition": "replace_partition",
    "replace_where": "replace_where",
}
DESCRIBED_DEFAULT_WRITE_MODE = "append"
DEFAULT_SUBJECT = "Convergence: {pipeline_id} for {date}"
_STEP_MARKS = frozenset(
    {"source", "config", "description", "timeout_minutes", "retry_policy", "to_emails", "message",
     "subject_template", "body_template"}
)  # fmt: skip
_DESTINATION_MARKS = frozenset(
    {"dataset_type", "dataset_id", "bq_project_id", "project_id", "table_config", "schema_template",
     "write_disposition"}
)  # fmt: skip
_EMAIL_FIELDS = (
    ("to_emails", "to"),
    ("message", "body"),
    ("body_template", "body"),
    ("subject_template", "subject"),
)


@dataclass
class Translation:
    """A described template in the typed shape, the warnings for its listing, and its fields as written."""

    template: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    written: dict[str, dict[str, str]] = field(default_factory=dict)  # step_id → typed field → as written

    def as_written(self, problems: list[StepProblem]) -> list[StepProblem]:
        """Problems found in the typed shape, each naming its field as the template writes it."""
        return [StepProblem(p.step_id, self._written_field(p.step_id, p.field), p.message) for p in problems]

    def _written_field(self, step_id: str, typed: str) -> str:
        for name, written in sorted(self.written.get(step_id, {}).items(), key=lambda kv: -len(kv[0])):
            if typed == name or typed.startswith((f"{name}.", f"{name}[")):
                return written + typed[len(name) :]
        return typed


def _steps(raw: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = raw.get("steps")
    return [s for s in steps if isinstance(s, Mapping)] if isinstance(steps, list) else []


def looks_described(raw: Any) -> bool:
    """Whether a template's YAML is in the described system's shape (by `pipeline_name` or a step's shape)."""
    if not isinstance(raw, Mapping):
        return False
    if "pipeline_name" in raw:
        return True
    for step in _steps(raw):
        if _STEP_MARKS & set(step) or step.get("ps_type") in EMAIL_TYPES | set(NO_EQUIVALENT):
            return True
        destination = step.get("destination")
        if isinstance(destination, Mapping) and (
            _DESTINATION_MARKS & set(destination)
            or str(destination.get("write_mode", "")).upper().startswith("WRITE_")
        ):
            return True
    return False


def _variable(value: Any) -> Any:
    """A variable written as a plain value, in the typed long form with the type its value has."""
    if isinstance(value, Mapping) or value is None:
        return value
    if isinstance(value, bool):
        return {"type": "bool", "default": value}
    if isinstance(value, int):
        return {"type": "int", "default": value}
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return {"type": "date", "default": value.isoformat()}
    if isinstance(value, float | dt.datetime):
        return {"default": value.isoformat() if isinstance(value, dt.datetime) else repr(value)}
    return {"default": value}


def _has_tenant_schema(table: str) -> bool:
    return (CONFIGS_DIR / "schemas" / "tenant" / f"{table}.json").is_file()


class _StepTranslator:
    """Translates one step, collecting its problems, the template's warnings and its fields as written."""

    def __init__(self, step: Mapping[str, Any], declared: set[str], translation: Translation) -> None:
        self.step = dict(step)
        self.step_id = step.get("step_id") if isinstance(step.get("step_id"), str) else ""
        self.declared = declared
        self.translation = translation
        self.problems: list[StepProblem] = []

    def problem(self, where: str, message: str) -> None:
        self.problems.append(StepProblem(self.step_id, where, message))

    def warn(self, message: str) -> None:
        self.translation.warnings.append(f"step {self.step_id or '?'}: {message}")

    def written_as(self, typed: str, written: str) -> None:
        self.translation.written.setdefault(self.step_id, {})[typed] = written

    def move(self, written: str, typed: str, *value: Any) -> None:
        """Put the step's `written` field (or the `value` it translates to) at `typed`; refuse both given."""
        given = self.step.pop(written, None)
        if typed in self.step:
            self.problem(written, f"give it once: {written} and {typed} are the same field")
            return
        self.step[typed] = value[0] if value else given
        self.written_as(typed, written)

    def translate(self) -> dict[str, Any]:
        self._common_fields()
        self.step = self._fragments(self.step)
        ps_type = self.step.get("ps_type")
        if ps_type in NO_EQUIVALENT:
            self.problem(
                "ps_type", f"{ps_type} of the described system has no equivalent: {NO_EQUIVALENT[ps_type]}"
            )
        if "source" in self.step:
            self._query_source()
        if isinstance(self.step.get("destination"), Mapping):
            self._destination(described_sql_step="sql" in self.translation.written.get(self.step_id, {}))
        if ps_type in EMAIL_TYPES or {"to_emails", "message", "subject_template", "body_template"} & set(
            self.step
        ):
            self._email()
        return self.step

    def _common_fields(self) -> None:
        config = self.step.pop("config", None)
        if isinstance(config, Mapping):
            for key, value in config.items():
                if key in self.step:
                    self.problem(f"config.{key}", f"give it once: {key} is also a field of the step")
                else:
                    self.step[key] = value
                    self.written_as(key, f"config.{key}")
        elif config is not None:
            self.problem("config", "must be a mapping of the step's settings")
        description = self.step.pop("description", None)
        if isinstance(description, str) and not self.step.get("name"):
            self.step["name"] = " ".join(description.split())
        if "timeout_minutes" in self.step:
            minutes = self.step["timeout_minutes"]
            if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
                self.problem("timeout_minutes", "must be a number of minutes above 0")
            else:
                seconds = int(minutes * 60)
                if seconds > MAX_STEP_SECONDS:
                    self.warn(
                        f"timeout_minutes {minutes} is more than a step may take: it runs for at most 9 minutes"
                    )
                self.move("timeout_minutes", "timeout_seconds", min(seconds, MAX_STEP_SECONDS))
        if self.step.pop("retry_policy", None) is not None:
            self.warn(
                "retry_policy is ignored: a step that fails transiently is retried by the bus (5 deliveries)"
            )
        if self.step.get("trigger") == "on_completion":
            self.step["trigger"] = "always"

    def _query_source(self) -> None:
        source = self.step["source"]
        if (
            not isinstance(source, Mapping)
            or not isinstance(source.get("query"), str)
            or not source["query"].strip()
        ):
            self.problem("source.query", "Field required: the query whose rows the step writes")
            self.step.pop("source")
            return
        for key in sorted(set(source) - {"query", "bq_project_id", "project_id"}):
            self.problem(f"source.{key}", "is not a field of a query source (query, bq_project_id)")
        for key in ("bq_project_id", "project_id"):
            if key in source:
                self.warn(f"source.{key} is ignored: a query reads only its tenant's dataset")
        try:
            query = translate_query(source["query"], self.declared)
        except SqlRefused as exc:
            self.problem("source.query", str(exc))
            self.step.pop("source")
            return
        self.translation.warnings.extend(f"step {self.step_id}: {note}" for note in query.notes)
        self.move("source", "sql", query.sql)
        self.written_as("sql", "source.query")
        if "source_tables" not in self.step:
            # Tables it reads that have a schema are created empty when absent, as typed steps list them.
            self.step["source_tables"] = [t for t in query.tables if _has_tenant_schema(t)]

    def _destination(self, *, described_sql_step: bool) -> None:
        destination = dict(self.step["destination"])
        for key in ("dataset_type", "dataset_id"):
            if key in destination:
                self.warn(
                    f"destination.{key} ({destination.pop(key)!r}) is ignored: a step writes only into its tenant's"
                    " own dataset"
                )
        for key in ("bq_project_id", "project_id"):
            if key in destination:
                destination.pop(key)
                self.warn(f"destination.{key} is ignored: a step writes only into its tenant's own dataset")
        if destination.pop("table_config", None) is not None:
            self.warn(
                "destination.table_config is ignored: partitioning and clustering come from the table's schema"
            )
        for written, typed in (("schema_template", "schema"), ("write_disposition", "write_mode")):
            if written in destination:
                if typed in destination:
                    self.problem(
                        f"destination.{written}", f"give it once: {written} and {typed} are the same field"
                    )
                destination[typed] = destination.pop(written)
                self.written_as(f"destination.{typed}", f"destination.{written}")
        table = destination.get("table")
        if isinstance(table, str) and "." in table:
            self.problem(
                "destination.table", "must be a table name: a step writes only into its tenant's dataset"
            )
        mode = destination.get("write_mode")
        if mode is None and described_sql_step:
            destination["write_mode"] = DESCRIBED_DEFAULT_WRITE_MODE
        elif isinstance(mode, str):
            key = mode.strip().lower()
            if key in ("write_empty", "empty"):
                self.problem(
                    "destination.write_mode",
                    f"{mode} has no equivalent: a step here must be safe to run again, and a second run of a"
                    " write-if-empty step would fail; use WRITE_TRUNCATE, WRITE_APPEND or replace_partition",
                )
            elif key in WRITE_MODES:
                destination["write_mode"] = WRITE_MODES[key]
            else:
                self.problem(
                    "destination.write_mode",
                    f"{mode!r} is not a write mode: WRITE_TRUNCATE, WRITE_APPEND, truncate, append,"
                    " replace_partition or replace_where",
                )
        self.step["destination"] = destination

    def _email(self) -> None:
        for written, typed in _EMAIL_FIELDS:
            if written in self.step:
                self.move(written, typed)
        self.step.setdefault("subject", DEFAULT_SUBJECT)

    def _fragments(self, value: Any, in_sql: bool = False, path: str = "") -> Any:
        """Quoted placeholders in the step's SQL fields (`sql:`, `where:`, `expression:`) made parameters."""
        if isinstance(value, str) and in_sql:
            try:
                return translate_fragment(value, self.declared)
            except SqlRefused as exc:
                self.problem(path, str(exc))
                return value
        if isinstance(value, list):
            return [self._fragments(v, in_sql, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            return {
                k: self._fragments(v, in_sql or k in SQL_KEYS, f"{path}.{k}" if path else str(k))
                for k, v in value.items()
            }
        return value


def translate(name: str, raw: Mapping[str, Any]) -> Translation:
    """The described template `raw` in the typed shape, or InvalidTemplate naming `name`, each step and field."""
    template = {k: v for k, v in raw.items() if k not in ("pipeline_name", "pipeline_id")}
    translation = Translation(template)
    problems: list[StepProblem] = []
    pipeline_name = raw.get("pipeline_name")
    if pipeline_name is not None:
        if isinstance(pipeline_name, str) and pipeline_name.strip():
            template["name"] = " ".join(pipeline_name.split())
            template.setdefault("description", template["name"])
        else:
            problems.append(StepProblem("", "pipeline_name", "must be a non-empty text"))
    pipeline_id = raw.get("pipeline_id")
    if pipeline_id is not None and pipeline_id != STANDARD_PIPELINE_ID:
        translation.warnings.append(
            f"pipeline_id {pipeline_id!r} is not used: a run's pipeline_id is always {STANDARD_PIPELINE_ID}"
        )
    variables = raw.get("variables")
    if isinstance(variables, Mapping):
        template["variables"] = {key: _variable(value) for key, value in variables.items()}
    declared = set(variables) if isinstance(variables, Mapping) else set()
    if isinstance(raw.get("steps"), list):
        steps = []
        for step in raw["steps"]:
            if not isinstance(step, Mapping):
                steps.append(step)
                continue
            translator = _StepTranslator(step, declared, translation)
            steps.append(translator.translate())
            problems.extend(translator.problems)
        template["steps"] = steps
    if problems:
        raise InvalidTemplate(name, problems)
    return translation
