"""Scheduled and bulk runs fan out in two levels: chunks of tenants, then batched step-0 messages."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from common.bus.messages import DispatchMessage, ScheduleMessage, encode
from common.errors import DependencyUnavailable
from common.metadata import runs
from common.metadata import schedules as schedule_records
from common.metadata.runs import RunRecord
from common.runtime import Runtime
from common.services import fanout
from common.settings import reset_settings
from common.types import utcnow
from tests.conftest import wait_for_bus
from tests.e2e.bulk_support import EXPORT_ROW, give_integration

TENANTS = [f"tenant_{i:02d}" for i in range(7)]
TEMPLATE = "gcp/example/dryrun"


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_CHUNK_SIZE", "3")
    reset_settings()


@pytest.fixture
def tenants(small_chunks: None, onboard_org: Callable[[str], str], runtime: Runtime) -> list[str]:
    for org in TENANTS:
        onboard_org(org)
    wait_for_bus(runtime)
    return TENANTS


def runs_of(rt: Runtime, tenant: str, trigger_type: str) -> list[RunRecord]:
    return [r for r in runs.latest_runs(rt.warehouse, tenant, limit=100) if r.trigger_type == trigger_type]


def publish(rt: Runtime, message: ScheduleMessage) -> None:
    rt.bus.publish(rt.settings.schedules_topic, message, message.attributes())
    wait_for_bus(rt, timeout=120)


def test_a_message_for_every_tenant_starts_one_run_per_active_tenant_in_chunks(
    tenants: list[str], runtime: Runtime
) -> None:
    published: list[ScheduleMessage] = []
    original = runtime.bus.publish_many

    def spy(topic: str, messages: list[Any]) -> list[str]:
        published.extend(m for m in messages if isinstance(m, ScheduleMessage))
        return original(topic, messages)

    runtime.bus.publish_many = spy  # type: ignore[method-assign]
    publish(runtime, ScheduleMessage(template=TEMPLATE, tenants="*", trigger_by="nightly", schedule_id="nightly",
                                     due_at="2026-11-22T06:00:00Z"))  # fmt: skip

    assert [m.chunk for m in published] == [0, 1, 2]
    assert [len(m.tenants) for m in published] == [3, 3, 1]
    assert sorted(itertools.chain.from_iterable(m.tenants for m in published)) == tenants
    for tenant in tenants:
        started = runs_of(runtime, tenant, "schedule")
        assert len(started) == 1, tenant
        assert started[0].status == "COMPLETE" and started[0].trigger_by == "nightly"


def test_a_redelivered_slot_never_starts_a_tenants_run_twice(tenants: list[str], runtime: Runtime) -> None:
    message = ScheduleMessage(template=TEMPLATE, tenants=tenants[:3], schedule_id="nightly",
                              due_at="2026-11-22T06:00:00Z")  # fmt: skip
    first = fanout.start_chunk(runtime, message)
    wait_for_bus(runtime)
    again = fanout.start_chunk(runtime, message)
    wait_for_bus(runtime)

    assert first == {"unknown_tenants": 0, "started": 3}
    assert again == {"already_done": 3}
    assert all(len(runs_of(runtime, t, "schedule")) == 1 for t in tenants[:3])
    next_slot = message.model_copy(update={"due_at": "2026-11-23T06:00:00Z"})
    assert fanout.start_chunk(runtime, next_slot)["started"] == 3


def test_a_chunk_delivered_while_another_instance_starts_it_is_refused_busy_and_then_found_done(
    tenants: list[str], runtime: Runtime
) -> None:
    message = ScheduleMessage(template=TEMPLATE, tenants=tenants[:2], trigger_type="bulk", bulk_id="b-held")
    other = runtime.claims.acquire(fanout.chunk_claim_key(message), lease=600)  # another instance is on it
    assert other is not None

    with pytest.raises(DependencyUnavailable) as refused:
        fanout.start_chunk(runtime, message)
    assert refused.value.code == "busy" and refused.value.status == 503
    assert runs_of(runtime, tenants[0], "bulk") == []

    runtime.claims.complete(other)  # the other instance finished
    assert fanout.start_chunk(runtime, message) == {"already_done": 2}


def test_a_chunk_that_failed_frees_its_claim_and_its_redelivery_starts_what_the_first_did_not(
    tenants: list[str], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = ScheduleMessage(template=TEMPLATE, tenants=tenants[:2], trigger_type="bulk", bulk_id="b-fails")
    with monkeypatch.context() as broken:
        broken.setattr(fanout, "_enqueue", lambda *args: (_ for _ in ()).throw(RuntimeError("instance died")))
        with pytest.raises(RuntimeError):
            fanout.start_chunk(runtime, message)
    assert runtime.claims.inspect(fanout.chunk_claim_key(message)).state == "released"

    again = fanout.start_chunk(runtime, message)
    wait_for_bus(runtime)
    assert again == {"unknown_tenants": 0, "already_started": 2}  # the records were written; step 0 now
    assert [r.status for r in runs_of(runtime, tenants[0], "bulk")] == ["COMPLETE"]


def test_bulk_runs_carry_trigger_type_bulk_and_unknown_tenants_are_counted_not_started(
    tenants: list[str], runtime: Runtime
) -> None:
    message = ScheduleMessage(template=TEMPLATE, tenants=[tenants[0], "nobody_here"], trigger_type="bulk",
                              trigger_by="operator")  # fmt: skip
    outcome = fanout.start_chunk(runtime, message)
    wait_for_bus(runtime)

    assert outcome == {"unknown_tenants": 1, "started": 1}
    assert [r.trigger_type for r in runs_of(runtime, tenants[0], "bulk")] == ["bulk"]


def test_a_chunk_out_of_time_hands_its_remaining_tenants_on_and_all_still_start(
    tenants: list[str], runtime: Runtime
) -> None:
    clock = itertools.count(0, 200)  # each look at the clock is 200 s later: the 420 s budget ends early
    message = ScheduleMessage(template=TEMPLATE, tenants=tenants[:3], trigger_type="bulk", trigger_by="slow")

    outcome = fanout.start_chunk(runtime, message, now=lambda: next(clock))
    wait_for_bus(runtime, timeout=120)

    assert outcome["started"] == 2 and outcome["handed_on"] == 1
    assert all(len(runs_of(runtime, t, "bulk")) == 1 for t in tenants[:3])


def test_chunks_for_ten_thousand_tenants_stay_far_below_the_event_size_limit(runtime: Runtime) -> None:
    longest = [f"t{i:05d}" + "x" * 43 for i in range(10_000)]  # 49-character ids, the longest allowed is 50
    size = runtime.settings.fanout_chunk_size
    parts = [ScheduleMessage(template=TEMPLATE, tenants=part, chunk=i, schedule_id="nightly",
                             due_at="2026-11-22T06:00:00Z")
             for i, part in enumerate(fanout.chunks(longest, size))]  # fmt: skip

    assert len(parts) == 10_000 // size
    assert max(len(encode(p)) for p in parts) < 512 * 1024 // 10


def chunk_outcomes(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, int]]:
    """What each fan-out chunk reports, in order, from here on."""
    seen: list[dict[str, int]] = []
    original = fanout.start_chunk

    def spy(rt: Runtime, message: ScheduleMessage, **kwargs: Any) -> dict[str, int]:
        outcome = original(rt, message, **kwargs)
        seen.append(outcome)
        return outcome

    monkeypatch.setattr(fanout, "start_chunk", spy)
    return seen


@pytest.fixture
def three_kinds(
    onboard_org: Callable[[str], str], trigger_client: Any, runtime: Runtime
) -> dict[str, dict[str, str]]:
    """`integrated` has a gcp integration, `uploaded` rows in gcp_billing_export_v1, `bare` neither."""
    keys = {org: {"X-API-Key": onboard_org(org)} for org in ("integrated", "uploaded", "bare")}
    give_integration(runtime, "integrated", "gcp")
    response = trigger_client.post(
        "/api/v1/data/uploaded/uploads/gcp_billing_export_v1", headers=keys["uploaded"], data=EXPORT_ROW,
        content_type="application/x-ndjson",
    )  # fmt: skip
    assert response.status_code == 201, response.json
    wait_for_bus(runtime)
    return keys


def test_a_platform_schedule_for_every_tenant_starts_only_for_tenants_with_something_to_read(
    three_kinds: dict[str, dict[str, str]], runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # configs/schedules.yml: daily_gcp_costs (gcp/cost/cost_billing), 06:00 UTC for "*"; a tick at 06:05 is due.
    outcomes = chunk_outcomes(monkeypatch)
    tick = DispatchMessage(cadence="every-15-minutes", now="2026-11-22T06:05:00+00:00")
    runtime.bus.publish(runtime.settings.schedules_topic, tick, tick.attributes())
    wait_for_bus(runtime, timeout=120)

    assert outcomes == [{"unknown_tenants": 0, "skipped": 1, "started": 2}]
    for tenant in ("integrated", "uploaded"):
        started = runs_of(runtime, tenant, "schedule")
        assert [r.pipeline_id for r in started] == [f"{tenant}-gcp-cost-cost_billing"], tenant
        assert started[0].trigger_by == "scheduler:daily_gcp_costs"
    assert runs_of(runtime, "bare", "schedule") == []
    record = schedule_records.slot_outcome(
        runtime, "daily_gcp_costs", dt.datetime(2026, 11, 22, 6, tzinfo=dt.UTC)
    )
    assert {k: record[k] for k in ("chunks", "tenants", "started", "skipped", "refused")} == {
        "chunks": 1, "tenants": 3, "started": 2, "skipped": 1, "refused": 0,
    }  # fmt: skip
    assert record["skipped_tenants"] == {"bare": "no gcp integration and no rows in gcp_billing_export_v1"}


def test_a_redelivered_slot_chunk_adds_nothing_to_the_dispatch_record(
    three_kinds: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    due = "2026-11-22T06:00:00+00:00"
    chunk = ScheduleMessage(template="gcp/cost/cost_billing", tenants=["bare", "integrated", "uploaded"],
                            schedule_id="daily_gcp_costs", due_at=due, chunk=0, only_ready=True)  # fmt: skip
    for _ in range(2):
        runtime.bus.publish(runtime.settings.schedules_topic, chunk, chunk.attributes())
        wait_for_bus(runtime, timeout=120)

    record = schedule_records.slot_outcome(runtime, "daily_gcp_costs", dt.datetime.fromisoformat(due))
    assert (record["chunks"], record["started"], record["skipped"]) == (1, 2, 1)


def test_a_tenants_own_schedule_starts_even_with_nothing_to_read(
    three_kinds: dict[str, dict[str, str]], runtime: Runtime, trigger_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    schedule = {"template": "gcp/cost/cost_billing", "cron": "0 6 * * *", "name": "mine"}
    response = trigger_client.post("/api/v1/schedules/bare", headers=three_kinds["bare"], json=schedule)
    assert response.status_code == 201, response.json
    outcomes = chunk_outcomes(monkeypatch)
    tick_at = (utcnow() + dt.timedelta(days=1)).replace(hour=6, minute=5, second=0, microsecond=0)
    tick = DispatchMessage(cadence="every-15-minutes", now=tick_at.isoformat())
    runtime.bus.publish(runtime.settings.schedules_topic, tick, tick.attributes())
    wait_for_bus(runtime, timeout=120)

    started = runs_of(runtime, "bare", "schedule")
    assert [r.trigger_by for r in started] == [f"schedule:{response.json['schedule_id']}"]
    assert sorted(o.get("skipped", 0) for o in outcomes) == [0, 1]  # the platform schedule skipped bare
