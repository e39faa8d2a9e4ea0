"""dq.checks `reconcile`: an output whose totals differ from its source's fails the step with both figures.

The checks run through the dq.checks processor on the embedded warehouse (DuckDB), over two tables of a
tenant whose per-day, per-currency totals are set by each case.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from common.errors import ConfigurationError, StepFailed
from common.processors.registry import StepContext, StepResult, get_processor
from common.runtime import Runtime
from common.templates.models import PipelineTemplate
from common.templates.resolver import resolve_template
from common.warehouse.sql import table_ref

TENANT = "acme"
DAY = dt.date(2024, 5, 2)
NEXT_DAY = DAY + dt.timedelta(days=1)
TOTALS = "SELECT day, currency, SUM(amount) AS total FROM `{tenant_id}`.`%s` WHERE day >= @date GROUP BY day, currency"
CHECK = {"type": "reconcile", "name": "billed_cost_equals_source", "source": TOTALS % "cost_source",
         "target": TOTALS % "cost_output"}  # fmt: skip


def load(rt: Runtime, table: str, rows: list[tuple[dt.date, str, float]]) -> None:
    data = pa.table(
        {
            "day": pa.array([r[0] for r in rows], pa.date32()),
            "currency": pa.array([r[1] for r in rows], pa.string()),
            "amount": pa.array([r[2] for r in rows], pa.float64()),
        }
    )
    rt.warehouse.load_arrow(TENANT, table, data, mode="replace")


def check(rt: Runtime, **changes: Any) -> StepResult:
    """Run a dq.checks step holding one reconcile check (CHECK with `changes`) for DAY."""
    template = PipelineTemplate.model_validate(
        {"steps": [{"step_id": "reconcile", "ps_type": "dq.checks", "table": "cost_output",
                    "checks": [{**CHECK, **changes}]}]}
    )  # fmt: skip
    pipeline = resolve_template(
        template, tenant_id=TENANT, provider="aws", domain="cost", template_name="focus", run_id="run-1",
        request={"date": DAY.isoformat()},
    )  # fmt: skip
    ctx = StepContext(runtime=rt, tenant_id=TENANT, run_id="run-1", pipeline=pipeline, step=pipeline.steps[0])
    return get_processor("dq.checks")(ctx)


def failed(rt: Runtime, **changes: Any) -> str:
    with pytest.raises(StepFailed) as caught:
        check(rt, **changes)
    return caught.value.message


def recorded(rt: Runtime) -> dict[str, Any]:
    rows = rt.warehouse.query(
        f"SELECT * FROM {table_ref(TENANT, 'dq_results')} WHERE pipeline_logging_id = 'run-1'"
    )
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture
def rt(runtime: Runtime) -> Runtime:
    runtime.warehouse.create_dataset(TENANT)
    return runtime


def test_equal_totals_pass_and_are_recorded(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 1.25), (DAY, "USD", 2.5), (NEXT_DAY, "EUR", 4.0)])
    load(rt, "cost_output", [(DAY, "USD", 3.75), (NEXT_DAY, "EUR", 1.0), (NEXT_DAY, "EUR", 3.0)])

    result = check(rt)

    assert result.details == {"checks": 1, "warnings": 0}
    row = recorded(rt)
    assert (row["check_name"], row["check_type"], row["status"], row["failed_rows"]) == (
        "billed_cost_equals_source", "reconcile", "PASS", 0,
    )  # fmt: skip
    assert row["observed_value"] == "2 totals agree"


def test_differing_totals_fail_the_step_with_both_figures(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 1.6823086974)])
    load(rt, "cost_output", [(DAY, "USD", 1.6823)])

    message = failed(rt)

    assert "billed_cost_equals_source (reconcile)" in message
    assert "day=2024-05-02, currency=USD: source 1.6823087 vs output 1.6823" in message
    row = recorded(rt)
    assert (row["status"], row["severity"], row["failed_rows"]) == ("FAIL", "error", 1)
    assert "source 1.6823087 vs output 1.6823" in row["observed_value"]


@pytest.mark.parametrize(
    ("relative_difference", "agrees"),
    [(0.0, True), (0.9e-6, True), (1.1e-6, False), (-0.9e-6, True), (-1.1e-6, False)],
    ids=["equal", "just_inside_above", "just_outside_above", "just_inside_below", "just_outside_below"],
)
def test_totals_agree_within_a_relative_tolerance_of_one_in_a_million(
    rt: Runtime, relative_difference: float, agrees: bool
) -> None:
    source = 1000.0
    output = source * (1 + relative_difference)
    load(rt, "cost_source", [(DAY, "USD", source)])
    load(rt, "cost_output", [(DAY, "USD", output)])

    if agrees:
        check(rt)
        assert recorded(rt)["status"] == "PASS"
    else:
        assert f"source 1000 vs output {output:.9g}" in failed(rt)


def test_a_check_may_widen_its_tolerance(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 100.0)])
    load(rt, "cost_output", [(DAY, "USD", 100.4)])

    check(rt, tolerance=0.005)
    assert recorded(rt)["status"] == "PASS"
    assert "source 100 vs output 100.4" in failed(rt, tolerance=0.003)


def test_a_key_present_on_one_side_only_counts_as_zero_on_the_other(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 5.0), (NEXT_DAY, "USD", 2.0)])
    load(rt, "cost_output", [(DAY, "USD", 5.0), (DAY, "EUR", 0.75)])

    message = failed(rt)

    assert "day=2024-05-02, currency=EUR: source 0 vs output 0.75" in message
    assert "day=2024-05-03, currency=USD: source 2 vs output 0" in message
    assert "day=2024-05-02, currency=USD" not in message
    assert recorded(rt)["failed_rows"] == 2


def test_zero_totals_on_both_sides_agree(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 0.0), (DAY, "EUR", 1e-12)])
    load(rt, "cost_output", [(DAY, "USD", 0.0)])

    check(rt)
    assert recorded(rt)["status"] == "PASS"


def test_many_mismatches_name_the_first_five_and_count_the_rest(rt: Runtime) -> None:
    days = [DAY + dt.timedelta(days=i) for i in range(8)]
    load(rt, "cost_source", [(d, "USD", 1.0) for d in days])
    load(rt, "cost_output", [(d, "USD", 2.0) for d in days])

    message = failed(rt)

    assert message.count("source 1 vs output 2") == 5
    assert message.endswith("and 3 more")
    assert recorded(rt)["failed_rows"] == 8


def test_a_warning_reconcile_records_the_mismatch_without_failing_the_step(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 3.0)])
    load(rt, "cost_output", [(DAY, "USD", 2.0)])

    result = check(rt, severity="warn")

    assert result.details == {"checks": 1, "warnings": 1}
    row = recorded(rt)
    assert (row["status"], row["severity"]) == ("FAIL", "warn")
    assert "source 3 vs output 2" in row["observed_value"]


def test_a_query_without_a_total_column_is_a_configuration_error(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 3.0)])
    load(rt, "cost_output", [(DAY, "USD", 3.0)])
    target = "SELECT day, SUM(amount) AS cost FROM `{tenant_id}`.`cost_output` GROUP BY day"

    with pytest.raises(ConfigurationError) as caught:
        check(rt, target=target)
    assert "target query must return a `total` column" in caught.value.message


def test_a_rerun_of_the_step_keeps_one_result_per_check(rt: Runtime) -> None:
    load(rt, "cost_source", [(DAY, "USD", 3.0)])
    load(rt, "cost_output", [(DAY, "USD", 2.0)])
    failed(rt)
    load(rt, "cost_output", [(DAY, "USD", 3.0)])

    check(rt)

    assert recorded(rt)["status"] == "PASS"
