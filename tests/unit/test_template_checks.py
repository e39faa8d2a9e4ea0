"""Templates are checked against their processors' config models when they load (CONTRACT §3).

Every shipped template and setup pipeline loads; a step with an unknown field, a missing one, a wrong type,
an unknown enum value or an unknown ps_type is refused with 400 naming the template, the step and the field;
a value still holding a placeholder is left for the run to check once it is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from common.errors import ConfigurationError
from common.processors import registry
from common.providers.registry import PROVIDERS, find_provider, integration_providers
from common.templates import loader, step_checks
from common.templates.loader import (
    load_setup_pipeline,
    load_template,
    parse_template_file,
    setup_pipeline_names,
    shipped_pipelines,
    template_paths,
)
from common.templates.resolver import resolve_template
from common.templates.step_checks import InvalidTemplate

ETL_STEP = {
    "step_id": "load", "ps_type": "sql.transform", "sql": "SELECT 1 AS x",
    "destination": {"table": "billing_cost_daily", "write_mode": "truncate"},
}  # fmt: skip
CHECK_STEP = {"step_id": "quality", "ps_type": "dq.checks", "table": "billing_cost_daily",
              "checks": [{"type": "row_count", "min": 1}]}  # fmt: skip
MAIL_STEP = {"step_id": "notify", "ps_type": "notify.email", "to": "ops@example.com", "subject": "done"}


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty configs/ the loader reads instead of the shipped one (caches cleared around the test)."""
    root = tmp_path / "configs"
    root.mkdir()
    monkeypatch.setattr(loader, "CONFIGS_DIR", root)
    load_template.cache_clear()
    load_setup_pipeline.cache_clear()
    yield root
    load_template.cache_clear()
    load_setup_pipeline.cache_clear()


def plant(configs: Path, steps: list[dict[str, Any]], name: str = "gcp/cost/planted", **extra: Any) -> None:
    path = configs / f"{name}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"description": "planted", **extra, "steps": steps}, sort_keys=False))


def refusal(configs: Path, steps: list[dict[str, Any]], **extra: Any) -> InvalidTemplate:
    plant(configs, steps, **extra)
    with pytest.raises(InvalidTemplate) as caught:
        load_template("gcp", "cost", "planted")
    assert caught.value.status == 400 and caught.value.code == "invalid_template"
    return caught.value


# -- what ships -------------------------------------------------------------------------------------------


def test_every_shipped_template_and_setup_pipeline_loads_checked() -> None:
    shipped = dict(shipped_pipelines())
    expected = {"gcp/cost/cost_billing", "gcp/example/dryrun", "focus/cost/import", "setup/onboarding"}
    assert expected <= set(shipped)
    for name, path in shipped.items():
        parse_template_file(path, name)
    for provider, domain, name, _ in template_paths():
        load_template(provider, domain, name)
    assert setup_pipeline_names() == ["bootstrap", "dryrun", "onboarding"]
    for name in setup_pipeline_names():
        load_setup_pipeline(name)


def test_every_provider_folder_of_configs_is_a_registered_provider() -> None:
    folders = {provider for provider, _, _, _ in template_paths()}
    assert folders and all(find_provider(folder) is not None for folder in folders), folders
    assert [p.name for p in PROVIDERS] == ["gcp", "aws", "azure", "openai", "anthropic", "deepseek", "focus"]
    assert integration_providers() == ("gcp", "aws", "azure", "openai", "anthropic", "deepseek")


def test_every_processor_has_a_config_model_and_the_sql_step_keeps_its_older_names() -> None:
    specs = {spec.name: spec for spec in registry.processor_specs()}
    assert {"sql.transform", "dq.checks", "notify.email", "source.files", "gcp.billing_export",
            "openai.costs", "anthropic.costs", "setup.create_tables"} <= set(specs)  # fmt: skip
    assert all(issubclass(spec.config, BaseModel) for spec in specs.values())
    assert specs["sql.transform"].aliases == ("gcp.bq_etl", "gcp.bigquery_to_bigquery")
    run = registry.get_processor("sql.transform")
    assert registry.get_processor("gcp.bq_etl") is run
    assert registry.get_processor("gcp.bigquery_to_bigquery") is run


# -- refusals name the template, the step and the field ----------------------------------------------------


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ({**ETL_STEP, "destinaton": {"table": "x"}}, "step load: destinaton: Extra inputs are not permitted"),
        ({**ETL_STEP, "destination": {"write_mode": "truncate"}},
         "step load: destination.table: Field required"),
        ({**CHECK_STEP, "checks": [{"type": "row_count", "min": "lots"}]},
         "step quality: checks[0].min: Input should be a valid integer"),
        ({**CHECK_STEP, "checks": [{"type": "sometimes"}]}, "step quality: checks[0].type: Input should be"),
        ({**ETL_STEP, "destination": {"table": "billing_cost_daily", "write_mode": "upsert"}},
         "step load: destination.write_mode: Input should be 'replace_partition', 'replace_where'"),
        ({**MAIL_STEP, "to": "not-an-address"}, "step notify: to: not an email address: not-an-address"),
        ({**MAIL_STEP, "ps_type": "notify.emial"},
         "step notify: ps_type: no processor is registered as notify.emial (did you mean notify.email?)"),
        ({**ETL_STEP, "destination": {"table": "no_such_table", "write_mode": "truncate"}},
         "step load: destination: no schema configs/schemas/tenant/no_such_table.json"),
        ({"step_id": "files", "ps_type": "source.files", "table": "raw", "integration": "gcp"},
         "step files: integration: must name a provider whose integration holds its files: aws, azure"),
    ],  # fmt: skip
    ids=["unknown_field", "missing_field", "wrong_type", "unknown_check_type", "unknown_write_mode",
         "bad_literal_address", "unknown_ps_type", "table_without_schema", "provider_without_files"],
)
def test_a_bad_step_is_refused_naming_template_step_and_field(configs: Path, step, expected) -> None:
    error = refusal(configs, [MAIL_STEP | {"step_id": "first"}, step])
    assert error.message.startswith("gcp/cost/planted step "), error.message
    assert expected in error.message, error.message
    assert error.to_body()["template"] == "gcp/cost/planted"
    assert [p["step_id"] for p in error.to_body()["problems"]] == [step["step_id"]]


def test_every_problem_of_every_step_is_named_at_once(configs: Path) -> None:
    error = refusal(configs, [{**ETL_STEP, "sql": 7, "colour": "red"}, {**CHECK_STEP, "table": None}])
    fields = [(p["step_id"], p["field"]) for p in error.to_body()["problems"]]
    assert fields == [("load", "sql"), ("load", "colour"), ("quality", "table")]


def test_a_common_step_field_of_the_wrong_kind_is_refused_naming_the_step(configs: Path) -> None:
    error = refusal(configs, [{**MAIL_STEP, "trigger": "sometimes"}])
    expected = "gcp/cost/planted step notify: trigger: Input should be 'always'"
    assert error.message.startswith(expected), error.message


def test_a_setup_pipeline_is_checked_too(configs: Path) -> None:
    plant(configs, [{"step_id": "tables", "ps_type": "setup.create_tables", "scope": "everything"}],
          name="setup/bootstrap")  # fmt: skip
    with pytest.raises(InvalidTemplate) as caught:
        load_setup_pipeline("bootstrap")
    assert "setup/bootstrap step tables: scope: Input should be 'control' or 'tenant'" in caught.value.message


def test_a_file_that_is_not_yaml_is_refused_naming_it(configs: Path) -> None:
    (configs / "gcp" / "cost").mkdir(parents=True)
    (configs / "gcp" / "cost" / "planted.yml").write_text("steps: [unclosed\n")
    with pytest.raises(InvalidTemplate) as caught:
        load_template("gcp", "cost", "planted")
    assert caught.value.message.startswith("gcp/cost/planted template: is not YAML"), caught.value.message


# -- placeholders are judged when the run knows their values ----------------------------------------------


def test_values_still_holding_placeholders_are_left_for_the_run(configs: Path) -> None:
    plant(
        configs,
        [
            {**CHECK_STEP, "checks": [{"type": "row_count", "min": "{min_rows}"}]},
            {**MAIL_STEP, "to": "{notify_to}"},
        ],
        variables={"min_rows": {"type": "int", "default": 0}, "notify_to": "ops@example.com"},
    )
    assert [s.step_id for s in load_template("gcp", "cost", "planted").steps] == ["quality", "notify"]


def test_a_placeholder_does_not_excuse_the_other_fields(configs: Path) -> None:
    error = refusal(configs, [{**MAIL_STEP, "to": "{notify_to}", "subject": ""}],
                    variables={"notify_to": "ops@example.com"})  # fmt: skip
    assert [p["field"] for p in error.to_body()["problems"]] == ["subject"]


def test_the_run_checks_what_a_placeholder_resolved_to(configs: Path) -> None:
    plant(configs, [{**CHECK_STEP, "checks": [{"type": "row_count", "min": "{min_rows}"}]}],
          variables={"min_rows": {"type": "string", "default": "lots"}})  # fmt: skip
    pipeline = resolve_template(
        load_template("gcp", "cost", "planted"), tenant_id="acme", provider="gcp", domain="cost",
        template_name="planted", run_id="run-1",
    )  # fmt: skip
    ctx = registry.StepContext(runtime=None, tenant_id="acme", run_id="run-1", pipeline=pipeline,
                               step=pipeline.steps[0])  # fmt: skip
    with pytest.raises(ConfigurationError) as caught:
        registry.get_processor("dq.checks")(ctx)
    assert caught.value.message.startswith("step quality: checks[0].min: Input should be a valid integer")


# -- nothing loads unchecked ------------------------------------------------------------------------------


def test_without_the_processor_registry_no_template_loads(
    configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant(configs, [MAIL_STEP])
    monkeypatch.setattr(step_checks, "_checker", None)
    with pytest.raises(ConfigurationError, match="processor registry"):
        load_template("gcp", "cost", "planted")


# -- docs/templates.md lists every step type and check type ----------------------------------------------

TEMPLATES_DOC = Path(__file__).resolve().parents[2] / "docs" / "templates.md"


def doc_section(marker: str) -> str:
    text = TEMPLATES_DOC.read_text()
    return text.split(f"<!-- {marker}:begin -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]


def doc_rows(marker: str) -> dict[str, str]:
    """The rows of a generated table of docs/templates.md by their first cell (`name`)."""
    rows = {}
    for line in doc_section(marker).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = line
    return rows


def test_the_templates_doc_lists_every_ps_type_with_its_aliases_and_config_fields() -> None:
    rows = doc_rows("ps_types")
    missing = []
    for spec in registry.processor_specs():
        row = rows.get(spec.name, "")
        wanted = [spec.name, *spec.aliases, *spec.config.model_fields]
        missing += [f"{spec.name}: {name}" for name in wanted if f"`{name}`" not in row]
    assert not missing, "docs/templates.md, ps_types table: add " + "; ".join(missing)
    registered = {spec.name for spec in registry.processor_specs()}
    unknown = set(rows) - registered
    assert not unknown, f"docs/templates.md lists ps_types that are not registered: {unknown}"


def test_the_templates_doc_lists_every_data_quality_check_type() -> None:
    from typing import get_args

    from common.processors.dq import Check

    types = set(get_args(Check.model_fields["type"].annotation))
    assert types and set(doc_rows("dq_checks")) == types
