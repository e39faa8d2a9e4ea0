"""Reading one run touches only the partitions its records can be in: run ids are UUIDv7, carrying the time
the run was named, and status reads filter `recorded_at` from then (less the clock skew allowed between
instances). Runs named by an older release (UUIDv4 ids) are still read whole."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from common.metadata import runs
from common.runtime import Runtime
from tests.conftest import wait_for_bus


def _statements(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    original = runtime.warehouse.query

    def spy(sql: str, params: Any = None) -> Any:
        seen.append((sql, dict(params or {})))
        return original(sql, params)

    monkeypatch.setattr(runtime.warehouse, "query", spy)
    return seen


def _run_to_the_end(runtime: Runtime, trigger_client: Any, headers: dict[str, str]) -> str:
    """Trigger acme's dry run and let it finish; its run id."""
    accepted = trigger_client.post("/api/v1/pipelines/run/acme/gcp/example/dryrun", headers=headers, json={})
    assert accepted.status_code == 202, accepted.json
    wait_for_bus(runtime)
    return accepted.json["pipeline_logging_id"]


def test_a_status_read_filters_the_records_partitions_from_the_runs_start(
    runtime: Runtime,
    trigger_client: Any,
    two_tenants: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = two_tenants["acme"]
    run_id = _run_to_the_end(runtime, trigger_client, headers)
    assert uuid.UUID(run_id).version == 7
    seen = _statements(runtime, monkeypatch)

    run = trigger_client.get(f"/api/v1/pipelines/runs/{run_id}", headers=headers)

    assert run.status_code == 200 and run.json["status"] == "COMPLETE", run.json
    reads = [(sql, params) for sql, params in seen if "pipeline_runs" in sql or "step_logs" in sql]
    assert {("pipeline_runs" if "pipeline_runs" in sql else "step_logs") for sql, _ in reads} == {
        "pipeline_runs",
        "step_logs",
    }
    started = dt.datetime.fromisoformat(run.json["start_time"])
    for sql, params in reads:
        assert "recorded_at >= @since" in sql, sql
        assert started - dt.timedelta(hours=2) < params["since"] <= started


def test_a_run_named_by_an_older_release_is_still_read_whole(
    runtime: Runtime,
    trigger_client: Any,
    two_tenants: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = two_tenants["acme"]
    old_id = str(uuid.uuid4())
    monkeypatch.setattr(runs, "new_run_id", lambda: old_id)
    assert _run_to_the_end(runtime, trigger_client, headers) == old_id
    seen = _statements(runtime, monkeypatch)

    run = trigger_client.get(f"/api/v1/pipelines/runs/{old_id}", headers=headers)

    assert run.status_code == 200 and run.json["status"] == "COMPLETE", run.json
    assert [s["status"] for s in run.json["steps"]] == ["COMPLETE", "COMPLETE", "SKIPPED"]
    assert not [
        sql for sql, _ in seen if "recorded_at >= @since" in sql and "pipeline_logging_id = @run_id" in sql
    ]
