"""A template with a bad step is refused at trigger time (400 naming template, step and field), never a 202.

The trigger function is driven over HTTP; the template is planted in a configs/ folder of the test's own,
which the loader reads instead of the shipped one. A refusal must leave no run record behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.runtime import Runtime
from common.templates import loader
from tests.conftest import wait_for_bus
from tests.e2e.support import assert_error, assert_json

RUN = "/api/v1/pipelines/run/acme/gcp/cost/planted"
PROBE_SQL = (
    "SELECT CAST(@run_date AS DATE) AS run_date, @tenant_id AS tenant_id, @run_id AS pipeline_logging_id,"
    " CURRENT_TIMESTAMP() AS checked_at"
)
GOOD_STEP = {
    "step_id": "load", "name": "Write a probe row", "ps_type": "gcp.bq_etl", "sql": PROBE_SQL,
    "destination": {"table": "dryrun_results", "write_mode": "replace_partition",
                    "partition_column": "run_date", "partition_value": "run_date"},
}  # fmt: skip


@pytest.fixture
def acme(onboard_org: Callable[[str], str]) -> dict[str, str]:
    return {"X-API-Key": onboard_org("acme")}


@pytest.fixture
def plant(
    acme: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., None]]:
    """Write configs/gcp/cost/planted.yml in a folder the loader reads from now on (after onboarding)."""
    configs = tmp_path / "configs"
    monkeypatch.setattr(loader, "CONFIGS_DIR", configs)
    loader.load_template.cache_clear()

    def write(step: dict[str, Any], name: str = "planted") -> None:
        path = configs / "gcp" / "cost" / f"{name}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"description": "planted", "steps": [step]}, sort_keys=False))
        loader.load_template.cache_clear()

    yield write
    loader.load_template.cache_clear()


def run_records(runtime: Runtime, trigger_client: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The tenant's runs as listed and its run and step records (onboarding's dry run is already one)."""
    wait_for_bus(runtime)  # onboarding's dry run may still be writing its records
    listed = assert_json(trigger_client.get("/api/v1/pipelines/runs", headers=headers), 200)["runs"]
    wh = runtime.warehouse
    return {
        "runs": [r["pipeline_logging_id"] for r in listed],
        "pipeline_runs": wh.count_rows("acme", "pipeline_runs"),
        "step_logs": wh.count_rows("acme", "step_logs"),
    }


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        ({**GOOD_STEP, "destination": {**GOOD_STEP["destination"], "colour": "red"}},
         "destination.colour", "Extra inputs are not permitted"),
        ({key: value for key, value in GOOD_STEP.items() if key != "sql"}, "sql", "Field required"),
        ({**GOOD_STEP, "destination": {**GOOD_STEP["destination"], "table": ["dryrun_results"]}},
         "destination.table", "Input should be a valid string"),
    ],  # fmt: skip
    ids=["unknown_field", "missing_required_field", "wrong_type"],
)
def test_bad_step_is_400_naming_template_step_and_field_and_no_run_exists(
    runtime, trigger_client, acme, plant, step, field, message
):
    plant(step)
    before = run_records(runtime, trigger_client, acme)

    response = trigger_client.post(RUN, headers=acme, json={"date": "2024-05-01"})
    body = assert_error(response, 400, "invalid_template")

    assert body["message"].startswith(f"gcp/cost/planted step load: {field}: {message}"), body["message"]
    assert body["template"] == "gcp/cost/planted"
    (problem,) = body["problems"]
    assert problem["step_id"] == "load" and problem["field"] == field
    assert problem["message"].startswith(message)
    assert run_records(runtime, trigger_client, acme) == before


def test_unknown_ps_type_is_400_before_any_run(runtime, trigger_client, acme, plant):
    plant({**GOOD_STEP, "ps_type": "gcp.bq_elt"})
    before = run_records(runtime, trigger_client, acme)

    body = assert_error(trigger_client.post(RUN, headers=acme, json={}), 400, "invalid_template")

    assert "step load: ps_type: no processor is registered as gcp.bq_elt" in body["message"], body["message"]
    assert run_records(runtime, trigger_client, acme) == before


def test_the_same_step_written_correctly_is_accepted(runtime, trigger_client, acme, plant):
    plant(GOOD_STEP)

    body = assert_json(trigger_client.post(RUN, headers=acme, json={"date": "2024-05-01"}), 202)

    assert body["status"] == "PENDING" and body["pipeline_id"] == "acme-gcp-cost-planted"
    wait_for_bus(runtime)
    run_path = f"/api/v1/pipelines/runs/{body['pipeline_logging_id']}"
    run = assert_json(trigger_client.get(run_path, headers=acme), 200)
    assert run["status"] == "COMPLETE", run


def test_a_template_name_with_hyphens_runs_and_keeps_them_in_its_pipeline_id(
    runtime, trigger_client, acme, plant
):
    plant(GOOD_STEP, name="bill-sample-export-template")

    path = "/api/v1/pipelines/run/acme/gcp/cost/bill-sample-export-template"
    body = assert_json(trigger_client.post(path, headers=acme, json={"date": "2024-05-01"}), 202)

    assert body["pipeline_id"] == "acme-gcp-cost-bill-sample-export-template"
    wait_for_bus(runtime)
    run_path = f"/api/v1/pipelines/runs/{body['pipeline_logging_id']}"
    run = assert_json(trigger_client.get(run_path, headers=acme), 200)
    assert run["status"] == "COMPLETE" and run["template"] == "bill-sample-export-template", run


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/v1/pipelines/run/acme/gcp/cost/-leading-hyphen", "invalid_template"),
        ("/api/v1/pipelines/run/acme/gcp/cost/Upper-Case", "invalid_template"),
        ("/api/v1/pipelines/run/acme/gcp/cost/dots..in-name", "invalid_template"),
        ("/api/v1/pipelines/run/acme/gcp-x/cost/planted", "invalid_provider"),
        ("/api/v1/pipelines/run/acme/gcp/cost-x/planted", "invalid_domain"),
    ],
)
def test_hyphens_stay_refused_where_names_do_not_allow_them(runtime, trigger_client, acme, plant, path, code):
    plant(GOOD_STEP)
    before = run_records(runtime, trigger_client, acme)
    assert_error(trigger_client.post(path, headers=acme, json={}), 400, code)
    assert run_records(runtime, trigger_client, acme) == before
