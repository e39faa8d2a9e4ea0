"""Races across instances in gcp mode: several trigger instances, each with its own BigQuery (bqemulator),
Cloud Storage claims (fake-gcs-server) and bus clients, race the same run, the same Idempotency-Key and the
same onboarding, ROUNDS times each, and rotate one organisation's API key and tick the dispatcher on one
schedule and deliver one fan-out chunk to all of them ROTATION_ROUNDS times, released together by a
barrier. Exactly one wins every round; nothing in
one process decides it (each instance has its own clients and nothing in common but the emulators)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from common.bus.local import LocalBus
from common.bus.messages import ScheduleMessage, StepMessage
from common.claims.gcs import GcsClaims, storage_client
from common.contracts.onboarding import BootstrapRequest, OnboardRequest
from common.contracts.schedules import ScheduleRequest
from common.crypto.api_keys import hash_api_key
from common.errors import Conflict, ConvergenceError, DependencyUnavailable
from common.metadata import api_keys
from common.metadata import runs as records
from common.runtime import Runtime
from common.services import fanout, onboarding, pipelines, tenant_schedules
from common.services.dispatcher import dispatch_due
from common.warehouse.bigquery import BigQueryWarehouse
from tests.e2e.cost_support import platform_runtime

INSTANCES = 4
ROUNDS = int(__import__("os").environ.get("RACE_ROUNDS", "50"))
ROTATION_ROUNDS = 10  # key rotations and dispatcher ticks
TEMPLATE = ("gcp", "example", "dryrun")
CADENCE = "every-15-minutes"


class CountingBus(LocalBus):
    """A bus with no subscribers that remembers what each instance published (step 0 of each run)."""

    def __init__(self, project: str) -> None:
        super().__init__(project)
        self.published: list[str] = []

    def publish(self, topic: str, message: Any, attributes: dict[str, str] | None = None) -> str:
        if isinstance(message, StepMessage):
            self.published.append(message.run_id)
        return super().publish(topic, message, attributes)


@dataclass
class Instances:
    runtimes: list[Runtime]

    def race(self, attempt: Callable[[Runtime], Any]) -> list[Any]:
        """Run `attempt` on every instance at once; each outcome (a result or the ConvergenceError)."""
        barrier = threading.Barrier(len(self.runtimes))

        def one(rt: Runtime) -> Any:
            barrier.wait(timeout=60)
            try:
                return attempt(rt)
            except ConvergenceError as exc:
                return exc

        with ThreadPoolExecutor(len(self.runtimes)) as pool:
            return list(pool.map(one, self.runtimes))

    def published(self) -> list[str]:
        return [run_id for rt in self.runtimes for run_id in rt.bus.published]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def instances(
    tmp_path_factory: pytest.TempPathFactory, bigquery_emulator: str, claims_storage: str
) -> Iterator[Instances]:
    project = f"races-{uuid.uuid4().hex[:10]}"
    bucket = f"claims-{uuid.uuid4().hex[:12]}"
    admin = storage_client(project, claims_storage)
    admin.create_bucket(bucket)
    admin.close()
    home = tmp_path_factory.mktemp("races") / "home"  # one keyset file, as instances share one KMS key
    env = {"CONVERGENCE_WAREHOUSE": "bigquery", "BIGQUERY_EMULATOR_HOST": bigquery_emulator,
           "GCP_PROJECT_ID": project, "CONVERGENCE_CLAIMS": "gcs", "CLAIMS_BUCKET": bucket,
           "CLAIMS_STORAGE_EMULATOR_HOST": claims_storage}  # fmt: skip
    runtimes = []
    for _ in range(INSTANCES):
        rt = platform_runtime(home, env)
        assert isinstance(rt.warehouse, BigQueryWarehouse) and isinstance(rt.claims, GcsClaims)
        rt.bus.close()
        rt.bus = CountingBus(project)
        runtimes.append(rt)
    onboarding.bootstrap(runtimes[0], BootstrapRequest())
    try:
        yield Instances(runtimes)
    finally:
        for rt in runtimes:
            rt.close()


def _onboard(rt: Runtime, org: str) -> dict[str, Any]:
    return onboarding.onboard(rt, OnboardRequest(org_slug=org, company_name=org.title(),
                                                 admin_email="finops@example.com",
                                                 subscription_plan="enterprise"))  # fmt: skip


def _kinds(outcomes: list[Any]) -> Counter[str]:
    return Counter(type(o).__name__ if isinstance(o, Exception) else "won" for o in outcomes)


def test_the_same_run_triggered_on_every_instance_at_once_starts_once(instances: Instances) -> None:
    org = "race_runs"
    _onboard(instances.runtimes[0], org)
    before = len(instances.published())
    for round_ in range(ROUNDS):
        outcomes = instances.race(
            lambda rt: pipelines.start_run(rt, org, *TEMPLATE, {"trigger_by": f"round {round_}"})  # noqa: B023
        )
        assert _kinds(outcomes) == {"won": 1, "Conflict": INSTANCES - 1}, (round_, outcomes)
        ((run, replayed),) = [o for o in outcomes if not isinstance(o, Exception)]
        assert not replayed
        assert {o.details["pipeline_logging_id"] for o in outcomes if isinstance(o, Conflict)} == {
            run.pipeline_logging_id
        }
        # The run ends, so the next round's identical trigger is not refused for it.
        rt = instances.runtimes[0]
        latest = records.run_records(rt.warehouse, org, run.pipeline_logging_id)[-1]
        records.append_run_status(rt.warehouse, org, latest, "COMPLETE")
    started = instances.published()[before:]
    assert len(started) == ROUNDS == len(set(started))


def test_one_idempotency_key_sent_to_every_instance_at_once_starts_one_run(instances: Instances) -> None:
    org = "race_keys"
    _onboard(instances.runtimes[0], org)
    before = len(instances.published())
    for round_ in range(ROUNDS):
        key = f"race-{round_}"
        outcomes = instances.race(
            lambda rt: pipelines.start_run(rt, org, *TEMPLATE, {}, idempotency_key=key)  # noqa: B023
        )
        assert not [o for o in outcomes if isinstance(o, Exception)], (round_, outcomes)
        assert sorted(replayed for _, replayed in outcomes) == [False] + [True] * (INSTANCES - 1)
        assert len({run.pipeline_logging_id for run, _ in outcomes}) == 1, (round_, outcomes)
        rt = instances.runtimes[0]
        run_id = outcomes[0][0].pipeline_logging_id
        records.append_run_status(
            rt.warehouse, org, records.run_records(rt.warehouse, org, run_id)[-1], "COMPLETE"
        )
    started = instances.published()[before:]
    assert len(started) == ROUNDS == len(set(started))
    runs = records.latest_runs(instances.runtimes[0].warehouse, org, limit=1000)
    assert Counter(r.idempotency_key for r in runs if r.idempotency_key) == {
        f"race-{i}": 1 for i in range(ROUNDS)
    }


def test_one_organisation_onboarded_on_every_instance_at_once_is_onboarded_once(instances: Instances) -> None:
    keys: list[str] = []
    for round_ in range(ROUNDS):
        org = f"race_onboard_{round_}"
        outcomes = instances.race(lambda rt: _onboard(rt, org))  # noqa: B023
        assert _kinds(outcomes) == {"won": 1, "Conflict": INSTANCES - 1}, (round_, outcomes)
        assert {o.code for o in outcomes if isinstance(o, Conflict)} == {"org_exists"}
        keys += [o["api_key"] for o in outcomes if isinstance(o, dict)]
    assert len(set(keys)) == ROUNDS


def test_a_claim_whose_instance_died_is_taken_over_after_its_lease(instances: Instances) -> None:
    first, second = instances.runtimes[0].claims, instances.runtimes[1].claims
    key = f"start/race/{uuid.uuid4().hex}"
    assert first.acquire(key, lease=1.0) is not None  # and its instance dies: nothing releases it
    assert second.acquire(key, lease=1.0) is None
    assert second.wait_done(key, timeout=10) is not None  # free once the lease ran out
    assert second.acquire(key, lease=30.0) is not None


def test_api_keys_rotated_on_every_instance_at_once_leave_one_key_that_works(instances: Instances) -> None:
    org = "race_rotate"
    _onboard(instances.runtimes[0], org)
    for round_ in range(ROTATION_ROUNDS):
        outcomes = instances.race(lambda rt: onboarding.rotate_api_key(rt, org)["api_key"])
        assert not [o for o in outcomes if isinstance(o, Exception)], (round_, outcomes)
        working = [key for key in outcomes if api_keys.find_active(instances.runtimes[0], hash_api_key(key))]
        assert len(working) == 1, (round_, working)


def test_a_schedule_ticked_on_every_instance_at_once_starts_each_slot_once(instances: Instances) -> None:
    org = "race_slots"
    _onboard(instances.runtimes[0], org)
    request = ScheduleRequest(template="/".join(TEMPLATE), cron="*/15 * * * *")
    created = tenant_schedules.create_schedule(instances.runtimes[0], org, request)
    first = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=15)
    for round_ in range(ROTATION_ROUNDS):
        now = first + round_ * dt.timedelta(minutes=15)
        outcomes = instances.race(lambda rt: dispatch_due(rt, CADENCE, now))  # noqa: B023
        assert not [o for o in outcomes if isinstance(o, Exception)], (round_, outcomes)
        slots = [
            slot
            for outcome in outcomes
            for slot in outcome["slots"]
            if slot["schedule_id"] == created["schedule_id"]
        ]
        assert len(slots) == 1, (round_, outcomes)


def test_one_fanout_chunk_delivered_to_every_instance_at_once_starts_each_tenants_run_once(
    instances: Instances,
) -> None:
    tenants = ["race_chunk_a", "race_chunk_b"]
    for org in tenants:
        _onboard(instances.runtimes[0], org)
    before = len(instances.published())
    for round_ in range(ROTATION_ROUNDS):
        message = ScheduleMessage(template="/".join(TEMPLATE), tenants=tenants, trigger_type="bulk",
                                  bulk_id=f"race-bulk-{round_}", trigger_by="operator")  # fmt: skip
        outcomes = instances.race(lambda rt: fanout.start_chunk(rt, message))  # noqa: B023
        winners = [o for o in outcomes if isinstance(o, dict) and o.get("started")]
        assert len(winners) == 1 and winners[0]["started"] == len(tenants), (round_, outcomes)
        losers = [o for o in outcomes if o not in winners]
        assert all(
            (isinstance(o, DependencyUnavailable) and o.code == "busy") or o == {"already_done": len(tenants)}
            for o in losers
        ), (round_, outcomes)
        # The redeliveries Pub/Sub makes of the refused ones find the chunk done and start nothing.
        again = instances.race(lambda rt: fanout.start_chunk(rt, message))  # noqa: B023
        assert again == [{"already_done": len(tenants)}] * INSTANCES
        for org in tenants:  # the runs end, so the next round's bulk run is not refused as in flight
            rt = instances.runtimes[0]
            for run in records.latest_runs(rt.warehouse, org, active_only=True, limit=10):
                records.append_run_status(rt.warehouse, org, run, "COMPLETE")
    started = instances.published()[before:]
    assert len(started) == ROTATION_ROUNDS * len(tenants) == len(set(started))
