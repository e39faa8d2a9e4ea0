"""The described system's template shape, translated into the typed one when it loads.

Each rule of common/templates/described.py and described_sql.py: how the shape is recognised, what each
field becomes, which SQL is rewritten and how, what is refused (400 naming template, step and field as
written) and what is accepted with a warning for the template listing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.processors import registry
from common.templates import loader
from common.templates.described import looks_described, translate
from common.templates.described_sql import SqlRefused, translate_fragment, translate_query
from common.templates.models import PipelineTemplate
from common.templates.resolver import resolve_template
from common.templates.step_checks import InvalidTemplate

QUERY = (
    "SELECT '{tenant_id}' AS tenant_id, '{run_date}' AS run_date, 'ok' AS message,"
    " '{run_id}' AS pipeline_logging_id, CURRENT_TIMESTAMP() AS checked_at"
)


def sql_step(query: str = QUERY, **destination: Any) -> dict[str, Any]:
    return {
        "step_id": "record", "ps_type": "gcp.bigquery_to_bigquery", "source": {"query": query},
        "destination": {"table": "onboarding_checks", **destination},
    }  # fmt: skip


def described(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"pipeline_name": "A described template", **extra, "steps": list(steps) or [sql_step()]}


def load(body: dict[str, Any], configs: Path) -> PipelineTemplate:
    path = configs / "gcp" / "cost" / "planted.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    loader.load_template.cache_clear()
    return loader.load_template("gcp", "cost", "planted")


def refused(body: dict[str, Any], configs: Path) -> InvalidTemplate:
    with pytest.raises(InvalidTemplate) as caught:
        load(body, configs)
    assert caught.value.status == 400 and caught.value.code == "invalid_template"
    assert caught.value.message.startswith("gcp/cost/planted ")
    return caught.value


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "configs"
    monkeypatch.setattr(loader, "CONFIGS_DIR", root)
    loader.load_template.cache_clear()
    yield root
    loader.load_template.cache_clear()


def resolved_sql(template: PipelineTemplate, **request: Any) -> str:
    pipeline = resolve_template(
        template, tenant_id="acme", provider="gcp", domain="cost", template_name="planted", run_id="r1",
        request=request,
    )  # fmt: skip
    return pipeline.steps[0].config["sql"]


# -- recognising the shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"pipeline_name": "x", "steps": []},
        {"steps": [{"step_id": "a", "ps_type": "gcp.bq_etl", "source": {"query": "SELECT 1"}}]},
        {"steps": [{"step_id": "a", "ps_type": "sql.transform", "destination": {"dataset_type": "x"}}]},
        {
            "steps": [
                {"step_id": "a", "ps_type": "sql.transform", "destination": {"write_mode": "WRITE_APPEND"}}
            ]
        },
        {"steps": [{"step_id": "a", "ps_type": "notify.email", "to_emails": ["a@b.example.com"]}]},
        {"steps": [{"step_id": "a", "ps_type": "shared.email_notification"}]},
        {"steps": [{"step_id": "a", "ps_type": "dq.checks", "timeout_minutes": 3}]},
    ],
    ids=[
        "pipeline_name",
        "source_query",
        "dataset_type",
        "write_x_mode",
        "to_emails",
        "email_ps_type",
        "minutes",
    ],
)
def test_the_described_shape_is_recognised_by_pipeline_name_or_a_steps_shape(body) -> None:
    assert looks_described(body)


def test_every_shipped_typed_template_is_not_taken_for_described() -> None:
    typed = [path for name, path in loader.shipped_pipelines() if "-" not in name]
    assert typed
    for path in typed:
        assert not looks_described(yaml.safe_load(path.read_text())), path


# -- the template's own fields -----------------------------------------------------------------------------


def test_pipeline_name_names_and_describes_and_the_pipeline_id_stays_the_standard_one(configs: Path) -> None:
    template = load(described(pipeline_id="{tenant_id}-gcp-cost-billing"), configs)

    assert template.name == "A described template" and template.description == "A described template"
    assert template.pipeline_id == "{tenant_id}-{provider}-{domain}-{template_name}"
    assert any("pipeline_id '{tenant_id}-gcp-cost-billing' is not used" in w for w in template.warnings)
    assert (
        resolve_template(
            template, tenant_id="acme", provider="gcp", domain="cost", template_name="planted", run_id="r1"
        ).pipeline_id
        == "acme-gcp-cost-planted"
    )


def test_a_description_is_kept_beside_pipeline_name(configs: Path) -> None:
    template = load(described(description="What it does."), configs)
    assert (template.name, template.description) == ("A described template", "What it does.")


def test_plain_variables_take_the_type_of_their_value(configs: Path) -> None:
    variables = {"limit": 5, "strict": True, "start": "2024-05-01", "label": "x", "ratio": 0.5}
    body = described(variables=variables)
    body["variables"]["first_day"] = __import__("datetime").date(2024, 5, 1)

    template = load(body, configs)

    kinds = {name: (spec.type, spec.default, spec.overridable) for name, spec in template.variables.items()}
    assert kinds == {
        "limit": ("int", 5, False), "strict": ("bool", True, False), "start": ("string", "2024-05-01", False),
        "label": ("string", "x", False), "ratio": ("string", "0.5", False),
        "first_day": ("date", "2024-05-01", False),
    }  # fmt: skip


def test_a_step_config_block_description_minutes_and_on_completion_are_translated(configs: Path) -> None:
    step = {"step_id": "mail", "description": "Tell   the team", "ps_type": "shared.email_notification",
            "timeout_minutes": 3, "trigger": "on_completion", "retry_policy": {"max_retries": 2},
            "config": {"to_emails": "ops@example.com", "message": "done"}}  # fmt: skip

    template = load(described(sql_step(), step), configs)

    mail = template.steps[1]
    assert (mail.name, mail.trigger, mail.timeout_seconds) == ("Tell the team", "always", 180)
    assert mail.config == {
        "to": "ops@example.com",
        "body": "done",
        "subject": "Convergence: {pipeline_id} for {date}",
    }
    assert any("step mail: retry_policy is ignored" in w for w in template.warnings)


def test_more_minutes_than_a_step_may_take_run_for_nine_minutes_with_a_warning(configs: Path) -> None:
    template = load(described({**sql_step(), "timeout_minutes": 20}), configs)
    assert template.steps[0].timeout_seconds == 540
    assert any("timeout_minutes 20 is more than a step may take" in w for w in template.warnings)


@pytest.mark.parametrize(
    ("ps_type", "instead"),
    [("shared.slack_notification", "email"), ("customer.onboarding", "POST /api/v1/organizations/onboard"),
     ("aws.s3_to_bigquery", "source.files"), ("setup.initial", "POST /api/v1/admin/bootstrap")],
)  # fmt: skip
def test_a_described_ps_type_without_an_equivalent_is_refused_saying_what_replaces_it(
    configs: Path, ps_type: str, instead: str
) -> None:
    error = refused(described({"step_id": "other", "ps_type": ps_type}), configs)
    (problem,) = [p for p in error.problems if p.field == "ps_type"]
    assert (
        problem.step_id == "other" and "has no equivalent" in problem.message and instead in problem.message
    )


# -- email steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ps_type", ["shared.email_notification", "notify_systems.email_notification"])
def test_email_aliases_are_notify_email(ps_type: str) -> None:
    assert registry.get_processor(ps_type) is registry.get_processor("notify.email")
    spec = {s.name: s for s in registry.processor_specs()}["notify.email"]
    assert ps_type in spec.aliases


def test_to_emails_message_and_subject_map_onto_to_body_and_subject(configs: Path) -> None:
    step = {"step_id": "mail", "ps_type": "notify_systems.email_notification",
            "to_emails": ["a@example.com", "b@example.com"], "subject": "Hi", "message": "Body"}  # fmt: skip
    assert load(described(step), configs).steps[0].config == {
        "to": ["a@example.com", "b@example.com"], "subject": "Hi", "body": "Body",
    }  # fmt: skip


def test_without_to_emails_the_step_names_no_recipient(configs: Path) -> None:
    step = {"step_id": "mail", "ps_type": "shared.email_notification", "subject": "Hi", "message": "Body"}
    assert "to" not in load(described(step), configs).steps[0].config


def test_an_email_field_given_twice_is_refused_naming_it(configs: Path) -> None:
    step = {"step_id": "mail", "ps_type": "shared.email_notification", "to": "a@example.com",
            "to_emails": "b@example.com", "message": "x"}  # fmt: skip
    error = refused(described(step), configs)
    assert [(p.step_id, p.field) for p in error.problems] == [("mail", "to_emails")]
    assert "give it once" in error.problems[0].message


def test_problems_of_the_typed_step_name_the_fields_as_written(configs: Path) -> None:
    step = {"step_id": "mail", "ps_type": "shared.email_notification", "to_emails": ["nobody"],
            "subject_template": "x" * 301, "message": ["not", "text"]}  # fmt: skip
    error = refused(described(step), configs)
    assert sorted(p.field for p in error.problems) == ["message", "subject_template", "to_emails"]


# -- destinations ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "typed"),
    [("WRITE_TRUNCATE", "truncate"), ("WRITE_APPEND", "append"), ("truncate", "truncate"), ("append", "append"),
     ("write_truncate", "truncate"), ("overwrite", "truncate"), (None, "append")],
)  # fmt: skip
def test_write_modes_map_onto_the_typed_write_modes(configs: Path, written: str | None, typed: str) -> None:
    destination = {} if written is None else {"write_mode": written}
    template = load(described(sql_step(**destination)), configs)
    assert template.steps[0].config["destination"]["write_mode"] == typed


def test_write_disposition_is_write_mode_and_typed_modes_pass_through(configs: Path) -> None:
    template = load(described(sql_step(write_disposition="WRITE_TRUNCATE")), configs)
    assert template.steps[0].config["destination"]["write_mode"] == "truncate"
    template = load(described(sql_step(write_mode="replace_partition", partition_column="run_date",
                                       partition_value="run_date")), configs)  # fmt: skip
    assert template.steps[0].config["destination"]["write_mode"] == "replace_partition"


@pytest.mark.parametrize(
    ("mode", "message"), [("WRITE_EMPTY", "has no equivalent"), ("upsert", "is not a write mode")]
)
def test_write_empty_and_unknown_write_modes_are_refused(configs: Path, mode: str, message: str) -> None:
    error = refused(described(sql_step(write_mode=mode)), configs)
    assert [(p.step_id, p.field) for p in error.problems] == [("record", "destination.write_mode")]
    assert message in error.problems[0].message


def test_dataset_type_project_and_table_config_are_ignored_with_warnings(configs: Path) -> None:
    step = sql_step(dataset_type="gcp_silver_cost", bq_project_id="{project_id}", write_mode="append",
                    table_config={"time_partitioning": {"field": "run_date"}})  # fmt: skip
    template = load(described(step), configs)

    assert template.steps[0].config["destination"] == {"table": "onboarding_checks", "write_mode": "append"}
    warnings = "\n".join(template.warnings)
    assert "step record: destination.dataset_type ('gcp_silver_cost') is ignored" in warnings
    assert (
        "destination.bq_project_id is ignored" in warnings
        and "destination.table_config is ignored" in warnings
    )


def test_schema_template_names_the_schema_and_a_dotted_table_is_refused(configs: Path) -> None:
    template = load(described(sql_step(table="probe_rows", schema_template="onboarding_checks")), configs)
    assert template.steps[0].config["destination"]["schema"] == "onboarding_checks"
    error = refused(described(sql_step(table="globex.onboarding_checks")), configs)
    assert ("record", "destination.table") in [(p.step_id, p.field) for p in error.problems]


def test_a_missing_query_is_refused_naming_source_query(configs: Path) -> None:
    error = refused(described({**sql_step(), "source": {"bq_project_id": "p"}}), configs)
    assert [(p.step_id, p.field) for p in error.problems] == [("record", "source.query")]


def test_tables_the_query_reads_that_have_a_schema_are_its_source_tables(configs: Path) -> None:
    query = ("SELECT 'a' AS tenant_id, '{run_date}' AS run_date, e.currency AS message, '{run_id}' AS"
             " pipeline_logging_id, CURRENT_TIMESTAMP() AS checked_at FROM {dataset_id}.gcp_billing_export_v1 AS e"
             " JOIN scratch_without_schema AS s ON TRUE")  # fmt: skip
    template = load(described(sql_step(query)), configs)
    assert template.steps[0].config["source_tables"] == ["gcp_billing_export_v1"]


# -- SQL -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "typed"),
    [("WHERE d = '{date}'", "d = @date"), ('WHERE d = "{date}"', "d = @date"),
     ("WHERE d = '{start_date}'", "d = @start_date"),
     ("WHERE n LIKE '%{label}%'", "n LIKE CONCAT('%', CAST(@label AS STRING), '%')"),
     ("WHERE n = r'{label}'", "n = @label"), ("WHERE n = '''{label}'''", "n = @label"),
     ("WHERE n = 'it\\'s {label}'", "n = CONCAT('it\\'s ', CAST(@label AS STRING))")],
)  # fmt: skip
def test_quoted_placeholders_become_query_parameters(written: str, typed: str) -> None:
    sql = translate_query(f"SELECT 1 AS x FROM t {written}", {"start_date", "label"}).sql
    assert " ".join(sql.split()).endswith(typed), sql


def test_a_value_that_would_break_string_substitution_never_enters_the_sql(configs: Path) -> None:
    hostile = "x'; DROP TABLE `acme`.`pipeline_runs`; --"
    query = QUERY.replace("'ok'", "'{label}'")
    template = load(described(sql_step(query), variables={"label": {"default": hostile, "overridable": True}}),
                    configs)  # fmt: skip

    for sql in (template.steps[0].config["sql"], resolved_sql(template, label=hostile + "2")):
        assert "@label AS message" in sql and "DROP" not in sql and "x'" not in sql


def test_unquoted_identifier_placeholders_keep_the_typed_rule() -> None:
    sql = translate_query(
        "SELECT {tenant_id} AS c, '{provider}' AS p FROM `{org_slug}`.`{provider}_raw`", set()
    ).sql
    assert (
        " ".join(sql.split()) == "SELECT {tenant_id} AS c, @provider AS p FROM `{tenant_id}`.`{provider}_raw`"
    )
    with pytest.raises(SqlRefused, match=r"\{limit\} outside quotes.*quote it"):
        translate_query("SELECT 1 AS x FROM t LIMIT {limit}", {"limit"})


@pytest.mark.parametrize(
    "reference",
    ["`{project_id}.{dataset_id}.t`", "{project_id}.{dataset_id}.t", "`{org_slug}.t`", "`{tenant_id}`.t",
     "{org_slug}.t", "t", "`{gcp_project_id}`.`{tenant_id}`.`t`", "{my_dataset}.t"],
)  # fmt: skip
def test_every_table_reference_becomes_the_tenants_own_table(reference: str) -> None:
    query = translate_query(f"SELECT x FROM {reference}", {"my_dataset"})
    assert " ".join(query.sql.split()) == "SELECT x FROM `{tenant_id}`.`t`"
    assert query.tables == ["t"]


def test_the_translated_sql_resolves_into_the_tenants_dataset_only(configs: Path) -> None:
    query = (
        QUERY
        + " FROM `{project_id}.{dataset_id}.onboarding_checks` JOIN {org_slug}.dryrun_results USING (run_date)"
    )
    sql = resolved_sql(load(described(sql_step(query)), configs))
    assert "`acme`.`onboarding_checks`" in sql and "`acme`.`dryrun_results`" in sql
    assert "project_id" not in sql and "dataset_id" not in sql


@pytest.mark.parametrize(
    ("query", "message"),
    [("SELECT x FROM globex.t", "reads globex.t of dataset globex"),
     ("SELECT x FROM `other-project.acme.t`", "of project other-project"),
     ("SELECT x FROM `{source_table}`", "a table name cannot come from the variable {source_table}"),
     ("SELECT x FROM {project_id}.t", "{project_id} stands where the dataset goes"),
     ("SELECT x FROM {nowhere}.t", "unknown placeholder {nowhere}"),
     ("SELECT x FROM {nowhere}.{tenant_id}.t", "unknown placeholder {nowhere}"),
     ("SELECT x FROM EXTERNAL_QUERY('conn', 'SELECT 1')", "a query reads tables only"),
     ("SELECT '{start_date}' AS x", "unknown placeholder '{start_date}'"),
     ("SELECT @nowhere AS x", "@nowhere is neither a declared variable nor a built-in"),
     ("SELECT 1 AS x; DROP TABLE t", "must be one query"), ("DELETE FROM t WHERE TRUE", "must be one query"),
     ("SELECT FROM WHERE", "does not parse as GoogleSQL"), ("SELECT 'open", "cannot be read as GoogleSQL"),
     ("SELECT b'{x}' AS y", "bytes literal")],
)  # fmt: skip
def test_sql_that_could_leave_the_tenant_or_hide_a_value_is_refused(query: str, message: str) -> None:
    with pytest.raises(SqlRefused) as caught:
        translate_query(query, {"x"})
    assert message in str(caught.value)


def test_ctes_are_not_tables_and_braces_in_literals_stay_literal(configs: Path) -> None:
    query = translate_query("WITH c AS (SELECT '{\"a\": 1}' AS j FROM src) SELECT j FROM c", set())
    assert query.tables == ["src"] and "FROM c" in query.sql
    template = load(described(sql_step(QUERY.replace("'ok'", "'{\"a\": 1}'"))), configs)
    assert "'{\"a\": 1}' AS message" in resolved_sql(template)


def test_quoted_placeholders_in_where_and_expression_fragments_become_parameters(configs: Path) -> None:
    check = {"step_id": "quality", "ps_type": "dq.checks", "table": "onboarding_checks",
             "where": "pipeline_logging_id = '{run_id}'",
             "checks": [{"type": "expression", "expression": "message != '{label}'"}]}  # fmt: skip
    template = load(described(sql_step(), check, variables={"label": "bad"}), configs)
    config = template.steps[1].config
    assert config["where"] == "pipeline_logging_id = @run_id"
    assert config["checks"][0]["expression"] == "message != @label"
    assert translate_fragment("d = '{date}'", set()) == "d = @date"


def test_every_refusal_of_a_template_is_named_at_once(configs: Path) -> None:
    error = refused(
        described(sql_step("SELECT '{a}' AS x", write_mode="WRITE_EMPTY"),
                  {"step_id": "chat", "ps_type": "notify_systems.slack_notification"}),
        configs,
    )  # fmt: skip
    assert sorted((p.step_id, p.field) for p in error.problems) == [
        ("chat", "ps_type"), ("record", "destination.write_mode"), ("record", "source.query"),
    ]  # fmt: skip


def test_translate_returns_the_typed_shape_and_leaves_the_written_one_alone() -> None:
    raw = described(sql_step(write_mode="WRITE_APPEND", dataset_type="x"))
    before = yaml.safe_dump(raw)
    translation = translate("gcp/cost/planted", raw)
    assert yaml.safe_dump(raw) == before
    assert "pipeline_name" not in translation.template and "source" not in translation.template["steps"][0]
    PipelineTemplate.model_validate(translation.template)
