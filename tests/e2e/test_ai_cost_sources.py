"""OpenAI and Anthropic cost loaders end to end: an onboarded tenant, its admin key stored through the API, a
run driven by the bus through step_execute, and the raw table checked against the provider's own totals.

The providers are the local replay server (convergence/demo/provider_apis.py), reached over real HTTP through
OPENAI_API_BASE / ANTHROPIC_API_BASE.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from common.bus.messages import StepMessage
from common.metadata import runs
from common.runtime import Runtime
from common.settings import get_settings, reset_settings
from common.templates.models import PipelineTemplate
from common.templates.resolver import resolve_template
from common.warehouse.sql import table_ref
from common.wiring import build_runtime, set_runtime
from convergence.demo.provider_apis import Fault, ProviderApiServer
from tests.conftest import wait_for_bus

DAY = dt.date(2025, 8, 1)
NEXT_DAY = DAY + dt.timedelta(days=1)
HTTP_ATTEMPTS = 3
PS_TYPES = {"openai": "openai.costs", "anthropic": "anthropic.costs"}
TABLES = {"openai": "openai_costs_raw", "anthropic": "anthropic_costs_raw"}
AMOUNT_COLUMN = {"openai": "amount_value", "anthropic": "amount"}  # dollars; cents


@pytest.fixture
def apis(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderApiServer]:
    """The replay server, with the settings pointing both providers at it (fast backoff, few attempts)."""
    with ProviderApiServer(seed=11, results_per_page=6) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        monkeypatch.setenv("ANTHROPIC_API_BASE", server.base_url)
        monkeypatch.setenv("HTTP_BACKOFF_SECONDS", "0.01")
        monkeypatch.setenv("HTTP_MAX_ATTEMPTS", str(HTTP_ATTEMPTS))
        reset_settings()
        yield server


@pytest.fixture
def runtime(apis: ProviderApiServer) -> Runtime:
    """The embedded runtime, built after the provider settings are in place."""
    rt = build_runtime(get_settings())
    set_runtime(rt)
    return rt


@pytest.fixture
def acme(onboard_org: Callable[[str], str]) -> dict[str, str]:
    return {"X-API-Key": onboard_org("acme")}


def store_key(onboard_client: Any, headers: dict[str, str], provider: str, key: str) -> None:
    response = onboard_client.post(
        f"/api/v1/integrations/acme/{provider}/setup", headers=headers, json={"credential": key}
    )
    assert response.status_code == 200, response.json
    assert key not in response.get_data(as_text=True)


def run_costs(
    rt: Runtime, trigger_client: Any, headers: dict[str, str], provider: str, day: dt.date, **config: Any
) -> dict:
    """A one-step pipeline run of the provider's loader for `day`, driven through the bus; the run view."""
    step = {"step_id": "load_costs", "ps_type": PS_TYPES[provider], **config}
    template = PipelineTemplate.model_validate({"description": f"{provider} costs", "steps": [step]})
    run_id = str(uuid.uuid4())
    pipeline = resolve_template(
        template, tenant_id="acme", provider=provider, domain="cost", template_name="costs_api",
        run_id=run_id, request={"date": day.isoformat(), "trigger_by": "e2e"},
    )  # fmt: skip
    runs.create_run(rt.warehouse, pipeline, run_id=run_id, trigger_type="api", trigger_by="e2e",
                    fingerprint=run_id, idempotency_key=None)  # fmt: skip
    message = StepMessage(run_id=run_id, tenant_id="acme", step_index=0)
    rt.bus.publish(rt.settings.steps_topic, message, message.attributes())
    wait_for_bus(rt)
    response = trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers)
    assert response.status_code == 200, response.json
    return response.json


def loaded(rt: Runtime, provider: str, day: dt.date) -> tuple[int, Decimal]:
    """(rows, exact dollar total) of one day in the provider's raw table."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    rows = rt.warehouse.query(
        f"SELECT {AMOUNT_COLUMN[provider]} AS amount FROM {table_ref('acme', TABLES[provider])}"
        " WHERE bucket_start >= @start AND bucket_start < @end",
        {"start": start, "end": start + dt.timedelta(days=1)},
    )
    total = sum((Decimal(row["amount"]) for row in rows), Decimal(0))
    return len(rows), total / 100 if provider == "anthropic" else total


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_day_of_costs_matches_the_providers_total_and_a_rerun_keeps_one_copy(
    provider, apis, runtime, onboard_client, trigger_client, acme
):
    store_key(onboard_client, acme, provider, apis.keys[provider])
    checked = len(apis.requests_to(provider))  # the setup's one check of the key
    expected = (apis.expected_rows(provider, DAY), apis.expected_total(provider, DAY))

    first = run_costs(runtime, trigger_client, acme, provider, DAY)
    assert first["status"] == "COMPLETE", first
    assert first["steps"][0]["rows_processed"] == expected[0]
    assert loaded(runtime, provider, DAY) == expected
    pages = len(apis.requests_to(provider)) - checked
    assert pages > 1  # the replay splits the day over pages of 6 results

    second = run_costs(runtime, trigger_client, acme, provider, DAY)
    assert second["status"] == "COMPLETE", second
    assert loaded(runtime, provider, DAY) == expected
    assert len(apis.requests_to(provider)) == checked + 2 * pages


def test_rerunning_one_day_leaves_the_neighbouring_day_alone(
    apis, runtime, onboard_client, trigger_client, acme
):
    store_key(onboard_client, acme, "openai", apis.keys["openai"])
    for day in (DAY, NEXT_DAY, DAY):
        assert run_costs(runtime, trigger_client, acme, "openai", day)["status"] == "COMPLETE"

    assert loaded(runtime, "openai", DAY) == (
        apis.expected_rows("openai", DAY),
        apis.expected_total("openai", DAY),
    )
    assert loaded(runtime, "openai", NEXT_DAY) == (
        apis.expected_rows("openai", NEXT_DAY),
        apis.expected_total("openai", NEXT_DAY),
    )


def test_refused_key_fails_the_run_saying_so_without_the_key(
    apis, runtime, onboard_client, trigger_client, acme
):
    wrong = "sk-ant-admin01-" + "Q" * 24
    store_key(onboard_client, acme, "anthropic", wrong)

    view = run_costs(runtime, trigger_client, acme, "anthropic", DAY)

    assert view["status"] == "FAILED"
    assert (
        "Anthropic cost report API refused the organization's admin key (HTTP 401)" in view["error_message"]
    )
    assert wrong not in str(view) and "Q" * 8 not in str(view)
    assert len(apis.requests_to("anthropic")) == 2  # the setup's check, then the run's request: no retry
    assert runtime.bus.dead_lettered == []


def test_provider_outage_beyond_the_step_attempts_is_retried_by_redelivery(
    apis, runtime, onboard_client, trigger_client, acme
):
    store_key(onboard_client, acme, "openai", apis.keys["openai"])
    apis.inject("openai", Fault(503), times=HTTP_ATTEMPTS + 1)

    view = run_costs(runtime, trigger_client, acme, "openai", DAY)

    assert view["status"] == "COMPLETE", view
    assert loaded(runtime, "openai", DAY) == (
        apis.expected_rows("openai", DAY),
        apis.expected_total("openai", DAY),
    )
    records = runtime.warehouse.query(
        f"SELECT status, error_message FROM {table_ref('acme', 'step_logs')}"
        " WHERE pipeline_logging_id = @run ORDER BY seq",
        {"run": view["pipeline_logging_id"]},
    )
    assert [r["status"] for r in records] == ["RETRYING", "COMPLETE"]
    assert f"after {HTTP_ATTEMPTS} attempts: HTTP 503" in records[0]["error_message"]


def test_run_without_a_stored_key_fails_naming_the_setup_route(apis, runtime, trigger_client, acme):
    view = run_costs(runtime, trigger_client, acme, "openai", DAY)

    assert view["status"] == "FAILED"
    assert "acme has no openai integration" in view["error_message"]
    assert "/api/v1/integrations/acme/openai/setup" in view["error_message"]
    assert apis.requests_to("openai") == []


def test_configured_table_receives_the_rows(apis, runtime, onboard_client, trigger_client, acme):
    store_key(onboard_client, acme, "anthropic", apis.keys["anthropic"])

    view = run_costs(runtime, trigger_client, acme, "anthropic", DAY, table="anthropic_costs_backfill")

    assert view["status"] == "COMPLETE", view
    assert runtime.warehouse.count_rows("acme", "anthropic_costs_backfill") == apis.expected_rows(
        "anthropic", DAY
    )
    assert not runtime.warehouse.table_exists("acme", "anthropic_costs_raw")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tabel": "openai_costs_raw"}, "step load_costs: tabel: Extra inputs are not permitted"),
        ({"table": "Costs; DROP"}, "step load_costs: table: String should match pattern"),
        ({"table": "pipeline_runs"}, "pipeline_runs is a platform table"),
    ],
)
def test_bad_step_config_fails_the_run_naming_the_problem(
    config, message, apis, runtime, onboard_client, trigger_client, acme
):
    store_key(onboard_client, acme, "openai", apis.keys["openai"])

    view = run_costs(runtime, trigger_client, acme, "openai", DAY, **config)

    assert view["status"] == "FAILED"
    assert message in view["error_message"], view["error_message"]
    assert len(apis.requests_to("openai")) == 1  # the setup's check of the key, and nothing from the run
