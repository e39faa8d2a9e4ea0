"""The template resolver's safety rules (CONTRACT §3) and the loader's refusal of odd template names."""

from __future__ import annotations

import datetime as dt
import os
import pathlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from common.errors import BadRequest, NotFound
from common.settings import CONFIGS_DIR
from common.templates import loader
from common.templates.loader import list_templates, load_template
from common.templates.models import PipelineTemplate
from common.templates.resolver import placeholders, resolve_template

TODAY = dt.date(2024, 3, 1)
BUILTIN_NAMES = (
    "tenant_id",
    "org_slug",
    "provider",
    "domain",
    "template_name",
    "pipeline_id",
    "run_date",
    "run_id",
)


def make_template(
    variables: dict[str, Any] | None = None, steps: list[dict[str, Any]] | None = None, **extra: Any
) -> PipelineTemplate:
    body: dict[str, Any] = {
        "variables": variables or {},
        "steps": steps or [{"step_id": "notify", "ps_type": "notify.email", "to": "ops@example.com"}],
        **extra,
    }
    return PipelineTemplate.model_validate(body)


def sql_step(sql: str, key: str = "sql") -> list[dict[str, Any]]:
    return [{"step_id": "load", "ps_type": "gcp.bq_etl", key: sql}]


def resolve(template: PipelineTemplate, request: dict[str, Any] | None = None, **overrides: Any):
    kwargs: dict[str, Any] = {
        "tenant_id": "acme",
        "provider": "gcp",
        "domain": "cost",
        "template_name": "daily",
        "run_id": "run-1",
        "request": request,
        "today": TODAY,
    }
    kwargs.update(overrides)
    return resolve_template(template, **kwargs)


def refused(
    template: PipelineTemplate, request: dict[str, Any] | None = None, **overrides: Any
) -> BadRequest:
    """Resolve expecting a 400; return the error for its message."""
    with pytest.raises(BadRequest) as caught:
        resolve(template, request, **overrides)
    assert caught.value.status == 400
    return caught.value


# -- what a request may set -------------------------------------------------------------------------------


def test_request_may_set_date_trigger_by_and_overridable_variables() -> None:
    template = make_template({"region": {"default": "us", "overridable": True}})
    pipeline = resolve(template, {"date": "2024-02-10", "trigger_by": "alice@example.com", "region": "eu"})
    assert pipeline.parameters == {"date": "2024-02-10", "trigger_by": "alice@example.com", "region": "eu"}


def test_non_overridable_variable_in_request_is_400_naming_it() -> None:
    template = make_template({"notify_to": {"default": "ops@example.com"}})
    error = refused(template, {"notify_to": "attacker@example.com"})
    assert "notify_to" in error.message


def test_unknown_request_key_is_400_naming_it() -> None:
    template = make_template({"region": {"default": "us", "overridable": True}})
    error = refused(template, {"regoin": "eu"})
    assert "regoin" in error.message


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_variable_cannot_be_set_by_a_request(name: str) -> None:
    error = refused(make_template(), {name: "other"})
    assert name in error.message


def test_builtin_tenant_id_in_request_does_not_change_the_tenant() -> None:
    with pytest.raises(BadRequest):
        resolve(make_template(), {"tenant_id": "globex"})
    assert resolve(make_template()).tenant_id == "acme"


def test_template_may_not_declare_a_builtin_as_its_own_variable() -> None:
    with pytest.raises(ValidationError, match="tenant_id"):
        make_template({"tenant_id": {"default": "globex", "overridable": True}})


# -- types ------------------------------------------------------------------------------------------------

BAD_VALUES = [
    ("date", {"type": "date"}, "2024/01/01"),
    ("date", {"type": "date"}, "01-02-2024"),
    ("date", {"type": "date"}, "2024-02-30"),
    ("date", {"type": "date"}, "2024-1-5"),
    ("date", {"type": "date"}, 20240101),
    ("int", {"type": "int"}, "abc"),
    ("int", {"type": "int"}, "1.5"),
    ("int", {"type": "int"}, 1.5),
    ("int", {"type": "int"}, True),
    ("bool", {"type": "bool"}, "yes"),
    ("bool", {"type": "bool"}, 1),
    ("enum", {"type": "enum", "values": ["usd", "eur"]}, "gbp"),
    ("enum", {"type": "enum", "values": ["usd", "eur"]}, "USD"),
    ("pattern", {"type": "string", "pattern": "^[a-z]{2}-[a-z]+[0-9]$"}, "us-east1; DROP"),
    ("pattern", {"type": "string", "pattern": "^[a-z]{2}-[a-z]+[0-9]$"}, "US-EAST1"),
    ("string", {"type": "string"}, 42),
    ("string", {"type": "string"}, "x" * 1001),
]


@pytest.mark.parametrize(
    ("kind", "spec", "value"), BAD_VALUES, ids=[f"{k}-{v!r}"[:40] for k, _, v in BAD_VALUES]
)
def test_value_of_wrong_type_is_400_naming_the_variable(kind: str, spec: dict[str, Any], value: Any) -> None:
    defaults = {
        "date": "2024-01-01",
        "int": 1,
        "bool": False,
        "enum": "usd",
        "pattern": "us-east1",
        "string": "x",
    }
    template = make_template({"the_var": {**spec, "default": defaults[kind], "overridable": True}})
    error = refused(template, {"the_var": value})
    assert "the_var" in error.message


@pytest.mark.parametrize(
    "value", ["2024-02-30", "2023-02-29", "2024-13-01", "2024-00-10", "24-01-01", "", None, 7]
)
def test_request_date_must_be_a_real_yyyy_mm_dd_date(value: Any) -> None:
    error = refused(make_template(), {"date": value})
    assert "date" in error.message


def test_leap_day_is_a_real_date() -> None:
    assert resolve(make_template(), {"date": "2024-02-29"}).parameters["date"] == "2024-02-29"


def test_values_are_coerced_to_their_declared_types() -> None:
    template = make_template(
        {
            "n": {"type": "int", "default": 0, "overridable": True},
            "flag": {"type": "bool", "default": False, "overridable": True},
            "day": {"type": "date", "default": "2024-01-01", "overridable": True},
            "cur": {"type": "enum", "values": ["usd", "eur"], "default": "usd", "overridable": True},
        }
    )
    pipeline = resolve(template, {"n": "42", "flag": "true", "day": "2024-02-03", "cur": "eur"})
    assert pipeline.variables["n"] == 42
    assert pipeline.variables["flag"] is True
    assert pipeline.variables["cur"] == "eur"
    params = pipeline.query_params()
    assert params["day"] == dt.date(2024, 2, 3)
    assert params["date"] == dt.date(2024, 2, 29)
    assert params["n"] == 42


def test_bad_default_in_the_template_is_refused() -> None:
    template = make_template({"n": {"type": "int", "default": "many"}})
    assert "n" in refused(template).message


def test_enum_variable_without_values_is_an_invalid_template() -> None:
    with pytest.raises(ValidationError):
        make_template({"cur": {"type": "enum", "default": "usd"}})


# -- placeholders -----------------------------------------------------------------------------------------


def test_unknown_placeholder_in_a_step_is_400_naming_it() -> None:
    template = make_template(steps=[{"step_id": "notify", "ps_type": "notify.email", "to": "{recipient}"}])
    assert "recipient" in refused(template).message


def test_unknown_placeholder_in_a_variable_default_is_400_naming_it() -> None:
    template = make_template({"subject": {"default": "costs for {nobody}"}})
    assert "nobody" in refused(template).message


def test_unknown_placeholder_in_pipeline_id_is_400() -> None:
    template = make_template(pipeline_id="{tenant_id}-{provider}-{domain}-{template_name}-{stage}")
    assert "stage" in refused(template).message


def test_pipeline_id_that_is_not_tenant_provider_domain_template_is_400() -> None:
    refused(make_template(pipeline_id="{tenant_id}-shared"))


def test_pipeline_id_resolves_to_tenant_provider_domain_template() -> None:
    pipeline = resolve(
        make_template(), tenant_id="globex", provider="aws", domain="billing", template_name="cur"
    )
    assert pipeline.pipeline_id == "globex-aws-billing-cur"
    assert pipeline.variables["pipeline_id"] == "globex-aws-billing-cur"


def test_variable_default_cycle_is_400_mentioning_the_cycle() -> None:
    template = make_template({"a": {"default": "{b}"}, "b": {"default": "{a}"}})
    error = refused(template)
    assert "cycle" in error.message
    assert "a" in error.message and "b" in error.message


def test_variable_that_references_itself_is_a_cycle() -> None:
    assert "cycle" in refused(make_template({"a": {"default": "x{a}"}})).message


def test_variable_defaults_may_reference_other_variables_and_builtins() -> None:
    template = make_template(
        {"team": {"default": "finops"}, "notify_to": {"default": "{team}+{tenant_id}@example.com"}},
        steps=[
            {
                "step_id": "notify",
                "ps_type": "notify.email",
                "to": "{notify_to}",
                "subject": "{date} {run_id}",
            }
        ],
    )
    step = resolve(template).steps[0]
    assert step.config["to"] == "finops+acme@example.com"
    assert step.config["subject"] == "2024-02-29 run-1"


def test_double_braces_are_literal_braces() -> None:
    template = make_template(
        {"label": {"default": "{{raw}}"}},
        steps=[
            {
                "step_id": "notify",
                "ps_type": "notify.email",
                "to": "ops@example.com",
                "subject": "{{date}} is {date}",
                "body": "{label}",
            }
        ],
    )
    config = resolve(template).steps[0].config
    assert config["subject"] == "{date} is 2024-02-29"
    assert config["body"] == "{raw}"
    assert placeholders("{{date}} and {{ {tenant_id} }}") == {"tenant_id"}


def test_double_braces_in_sql_are_literal_and_allowed() -> None:
    template = make_template(steps=sql_step("SELECT JSON '{{\"a\": 1}}' AS j, '{{date}}' AS s"))
    assert resolve(template).steps[0].config["sql"] == "SELECT JSON '{\"a\": 1}' AS j, '{date}' AS s"


def test_request_value_is_not_expanded_as_a_placeholder() -> None:
    template = make_template(
        {"label": {"default": "x", "overridable": True}},
        steps=[
            {"step_id": "notify", "ps_type": "notify.email", "to": "ops@example.com", "subject": "[{label}]"}
        ],
    )
    assert resolve(template, {"label": "{tenant_id}"}).steps[0].config["subject"] == "[{tenant_id}]"


# -- SQL: identifiers only --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["sql", "where", "expression", "period_where", "replace_where"])
@pytest.mark.parametrize("name", ["date", "trigger_by", "run_id", "run_date", "pipeline_id", "label"])
def test_value_placeholder_in_sql_is_refused(key: str, name: str) -> None:
    template = make_template(
        {"label": {"default": "x"}}, steps=sql_step(f"SELECT * FROM t WHERE c = '{{{name}}}'", key)
    )
    error = refused(template)
    assert name in error.message


def test_value_placeholder_in_sql_nested_in_a_list_is_refused() -> None:
    steps = [
        {
            "step_id": "check",
            "ps_type": "dq.checks",
            "table": "t",
            "checks": [{"type": "expression", "expression": "cost < {limit}"}],
        }
    ]
    error = refused(make_template({"limit": {"type": "int", "default": 5}}, steps=steps))
    assert "limit" in error.message


@pytest.mark.parametrize("key", ["source", "target"])
def test_value_placeholder_in_a_reconcile_checks_sql_is_refused(key: str) -> None:
    check = {"type": "reconcile", "source": "SELECT 1 AS total", "target": "SELECT 1 AS total"}
    check[key] = "SELECT SUM(cost) AS total FROM t WHERE label = '{label}'"
    steps = [{"step_id": "check", "ps_type": "dq.checks", "table": "t", "checks": [check]}]
    error = refused(make_template({"label": {"default": "x"}}, steps=steps))
    assert "label" in error.message and key in error.message


def test_a_step_setting_named_source_outside_checks_is_not_sql() -> None:
    steps = [{"step_id": "notify", "ps_type": "notify.email", "to": "ops@example.com", "source": "{label}"}]
    pipeline = resolve(make_template({"label": {"default": "billing"}}, steps=steps))
    assert pipeline.steps[0].config["source"] == "billing"


@pytest.mark.parametrize("name", ["tenant_id", "org_slug", "provider", "domain", "template_name"])
def test_identifier_builtins_are_allowed_in_sql(name: str) -> None:
    template = make_template(steps=sql_step(f"SELECT * FROM `{{{name}}}`.`t` WHERE d = @date"))
    pipeline = resolve(template, tenant_id="acme", provider="gcp", domain="cost", template_name="daily")
    expected = {
        "tenant_id": "acme",
        "org_slug": "acme",
        "provider": "gcp",
        "domain": "cost",
        "template_name": "daily",
    }
    assert pipeline.steps[0].config["sql"] == f"SELECT * FROM `{expected[name]}`.`t` WHERE d = @date"


def test_value_placeholder_outside_sql_keys_is_substituted() -> None:
    steps = [
        {"step_id": "notify", "ps_type": "notify.email", "to": "ops@example.com", "subject": "day {date}"}
    ]
    assert resolve(make_template(steps=steps)).steps[0].config["subject"] == "day 2024-02-29"


# -- injection attempts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["2024-01-01'; DROP TABLE x; --", "2024-01-01 OR 1=1", "2024-01-01\n", " 2024-01-01", "2024-01-01;"],
)
def test_sql_in_date_is_refused(value: str) -> None:
    assert "date" in refused(make_template(), {"date": value}).message


@pytest.mark.parametrize(
    "value",
    [
        "bob'; DROP TABLE x; --",
        'say "hi"',
        "line\nINFO forged log line",
        "tab\there",
        "carriage\rreturn",
        "",
        "x" * 201,
        42,
        "semi;colon",
        "`tick`",
    ],
)
def test_trigger_by_with_quotes_newlines_or_sql_is_refused(value: Any) -> None:
    assert "trigger_by" in refused(make_template(), {"trigger_by": value}).message


def test_ordinary_trigger_by_is_kept() -> None:
    pipeline = resolve(make_template(), {"trigger_by": "scheduler:daily/eu-west alice@example.com"})
    assert pipeline.parameters["trigger_by"] == "scheduler:daily/eu-west alice@example.com"


def test_sql_in_a_string_variable_reaches_sql_only_as_a_parameter() -> None:
    template = make_template(
        {"label": {"default": "x", "overridable": True}},
        steps=sql_step("SELECT @label AS label FROM `{tenant_id}`.`t`"),
    )
    attack = "x'); DROP TABLE t; --"
    pipeline = resolve(template, {"label": attack})
    assert pipeline.steps[0].config["sql"] == "SELECT @label AS label FROM `acme`.`t`"
    assert pipeline.query_params()["label"] == attack


# -- dates ------------------------------------------------------------------------------------------------


def test_date_defaults_to_yesterday_of_the_given_utc_day() -> None:
    pipeline = resolve(make_template(), today=dt.date(2024, 1, 1))
    assert pipeline.parameters["date"] == "2023-12-31"
    assert pipeline.variables["run_date"] == "2024-01-01"


def test_date_defaults_to_yesterday_utc_when_no_day_is_given() -> None:
    before = dt.datetime.now(dt.UTC).date()
    pipeline = resolve(make_template(), today=None)
    after = dt.datetime.now(dt.UTC).date()
    assert pipeline.parameters["date"] in {(d - dt.timedelta(days=1)).isoformat() for d in (before, after)}


def test_trigger_by_defaults_to_api() -> None:
    assert resolve(make_template()).parameters["trigger_by"] == "api"


# -- shipped templates ------------------------------------------------------------------------------------


def resolve_shipped(provider: str, domain: str, name: str, request: dict[str, Any] | None = None):
    return resolve(
        load_template(provider, domain, name), request, provider=provider, domain=domain, template_name=name
    )


def test_shipped_cost_billing_resolves_for_a_tenant() -> None:
    pipeline = resolve_shipped("gcp", "cost", "cost_billing", {"date": "2024-02-10", "min_rows": "3"})
    assert pipeline.pipeline_id == "acme-gcp-cost-cost_billing"
    assert pipeline.steps[0].ps_type == "gcp.billing_export"
    sql = pipeline.steps[1].config["sql"]
    assert "`acme`.`gcp_billing_export_v1`" in sql
    assert "@date" in sql and "2024-02-10" not in sql
    assert pipeline.query_params()["date"] == dt.date(2024, 2, 10)
    assert pipeline.variables["min_rows"] == 3
    notify = next(s for s in pipeline.steps if s.trigger == "on_failure")
    assert "2024-02-10" in notify.config["subject"] and "acme" in notify.config["subject"]


def test_shipped_cost_billing_refuses_bad_notify_address() -> None:
    error = refused(
        load_template("gcp", "cost", "cost_billing"),
        {"notify_to": "not-an-email"},
        template_name="cost_billing",
    )
    assert "notify_to" in error.message


def test_shipped_dryrun_does_not_let_a_request_redirect_its_notification() -> None:
    error = refused(
        load_template("gcp", "example", "dryrun"),
        {"notify_to": "evil@example.com"},
        domain="example",
        template_name="dryrun",
    )
    assert "notify_to" in error.message


def test_shipped_dryrun_resolves_with_defaults() -> None:
    pipeline = resolve_shipped("gcp", "example", "dryrun")
    assert pipeline.pipeline_id == "acme-gcp-example-dryrun"
    assert pipeline.parameters["date"] == "2024-02-29"
    assert [s.step_id for s in pipeline.steps] == ["write_probe", "check_probe", "notify_failure"]


def test_every_shipped_template_resolves_without_leftover_placeholders() -> None:
    templates = list_templates()
    assert templates
    for provider, domain, name, template in templates:
        pipeline = resolve(template, provider=provider, domain=domain, template_name=name)
        for step in pipeline.steps:
            assert not _leftover(step.config), f"{provider}/{domain}/{name} step {step.step_id}"


def _leftover(value: Any) -> set[str]:
    if isinstance(value, str):
        return placeholders(value)
    if isinstance(value, list):
        return set().union(*(_leftover(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_leftover(v) for v in value.values())) if value else set()
    return set()


# -- loader: names from URLs are never paths --------------------------------------------------------------

VALID_TEMPLATE = (
    "description: planted\nsteps:\n  - {step_id: s, ps_type: notify.email, to: ops@example.com, subject: planted}\n"
)


@pytest.fixture
def fresh_template_cache() -> Iterator[None]:
    load_template.cache_clear()
    yield
    load_template.cache_clear()


@pytest.fixture
def planted_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_template_cache: None) -> Path:
    """A configs/ tree with a real provider, runnable-looking files in setup/ and schemas/, and one outside."""
    configs = tmp_path / "configs"
    for relative in ("gcp/cost/daily.yml", "setup/cost/bootstrap.yml", "schemas/cost/daily.yml"):
        (configs / relative).parent.mkdir(parents=True, exist_ok=True)
        (configs / relative).write_text(VALID_TEMPLATE)
    outside = tmp_path / "secret" / "cost" / "leak.yml"
    outside.parent.mkdir(parents=True)
    outside.write_text(VALID_TEMPLATE)
    monkeypatch.setattr(loader, "CONFIGS_DIR", configs)
    return configs


@pytest.fixture
def file_access(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path the loader reads or probes."""
    seen: list[Path] = []
    for method in ("read_text", "read_bytes", "open", "is_file", "exists", "stat"):
        original = getattr(pathlib.Path, method)

        def spy(self: pathlib.Path, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            seen.append(self)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, method, spy)
    return seen


ODD_NAMES = [
    "..",
    "../setup",
    "a/b",
    "GCP",
    "Gcp",
    "%2e%2e",
    "",
    ".",
    "gcp/../setup",
    "cost\x00",
    " gcp",
    "-x",
]


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_template_names_are_refused_without_reading_outside_configs(
    name: str, position: int, planted_configs: Path, file_access: list[Path]
) -> None:
    segments = ["gcp", "cost", "daily"]
    segments[position] = name
    with pytest.raises((BadRequest, NotFound)) as caught:
        load_template(*segments)
    assert caught.value.status in (400, 404)
    touched = [os.path.realpath(p) for p in list(file_access)]
    root = os.path.realpath(planted_configs)
    outside = [p for p in touched if os.path.commonpath([p, root]) != root]
    assert not outside, f"read outside configs/: {outside}"


def test_traversal_to_a_template_outside_configs_is_refused(planted_configs: Path) -> None:
    with pytest.raises((BadRequest, NotFound)):
        load_template("..", "secret", "leak")
    with pytest.raises((BadRequest, NotFound)):
        load_template("gcp", "..", "../secret/cost/leak")


@pytest.mark.parametrize(
    ("provider", "domain", "name"), [("setup", "cost", "bootstrap"), ("schemas", "cost", "daily")]
)
def test_setup_and_schemas_folders_are_not_runnable_providers(
    provider: str, domain: str, name: str, planted_configs: Path
) -> None:
    with pytest.raises(NotFound) as caught:
        load_template(provider, domain, name)
    assert caught.value.status == 404


def test_planted_provider_template_loads(planted_configs: Path) -> None:
    assert load_template("gcp", "cost", "daily").description == "planted"


def test_missing_template_is_404(fresh_template_cache: None) -> None:
    with pytest.raises(NotFound) as caught:
        load_template("gcp", "cost", "no_such_template")
    assert caught.value.status == 404


def test_real_setup_pipelines_are_not_reachable_as_templates(fresh_template_cache: None) -> None:
    for name in ("bootstrap", "onboarding", "dryrun"):
        assert (CONFIGS_DIR / "setup" / f"{name}.yml").is_file()
        with pytest.raises((BadRequest, NotFound)):
            load_template("setup", "setup", name)


def test_list_templates_excludes_setup_and_schemas(planted_configs: Path) -> None:
    assert [(p, d, t) for p, d, t, _ in list_templates()] == [("gcp", "cost", "daily")]


def test_list_templates_lists_the_shipped_templates(fresh_template_cache: None) -> None:
    listed = {(p, d, t) for p, d, t, _ in list_templates()}
    assert {("gcp", "cost", "cost_billing"), ("gcp", "example", "dryrun")} <= listed
    assert not {p for p, _, _ in listed} & {"setup", "schemas"}


@pytest.mark.parametrize(("word", "expected"), [("yesterday", "2026-02-28"), ("today", "2026-03-01")])
def test_schedules_may_ask_for_yesterday_or_today(word: str, expected: str) -> None:
    pipeline = resolve_template(
        load_template("gcp", "cost", "cost_billing"), tenant_id="acme", provider="gcp", domain="cost",
        template_name="cost_billing", run_id="r1", request={"date": word}, today=dt.date(2026, 3, 1),
    )  # fmt: skip
    assert pipeline.parameters["date"] == expected
