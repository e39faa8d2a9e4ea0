"""The Cloud Scheduler stand-in for every suite. No Cloud Scheduler emulator exists, so scheduler tests run
the official google-cloud-scheduler client against convergence/emulators/scheduler_standin.py, a REST server on
127.0.0.1 in this process.

Starting it can fail the session (an error), never skip it. Imports are deferred to the fixtures, so a run
that needs no scheduler does not pay for loading the scheduler client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from common.settings import reset_settings

if TYPE_CHECKING:
    from google.cloud import scheduler_v1

    from convergence.emulators.scheduler_standin import SchedulerStandin


@pytest.fixture(scope="session")
def scheduler_standin() -> Iterator[SchedulerStandin]:
    """The running stand-in; `.endpoint` is its URL, `.job(name)` and `.runs_of(name)` show its state."""
    from convergence.emulators.scheduler_standin import SchedulerStandin

    with SchedulerStandin() as standin:
        yield standin


@dataclass(frozen=True)
class Published:
    """What a forced run handed to Pub/Sub (here: to the stand-in's publish callback)."""

    topic: str
    data: bytes
    attributes: dict[str, str]


@dataclass
class SchedulerLocation:
    """A fresh project/location on the stand-in, with the official client and what its runs published."""

    standin: SchedulerStandin
    client: scheduler_v1.CloudSchedulerClient
    project: str
    location: str
    published: list[Published] = field(default_factory=list)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def create_job(self, job_id: str, schedule: str, data: bytes, *, time_zone: str = "Etc/UTC",
                   topic: str = "convergence-schedules") -> scheduler_v1.Job:  # fmt: skip
        """A job with a Pub/Sub target, created the way Terraform creates one."""
        job = {
            "name": f"{self.parent}/jobs/{job_id}",
            "description": f"test job {job_id}",
            "schedule": schedule,
            "time_zone": time_zone,
            "pubsub_target": {"topic_name": f"projects/{self.project}/topics/{topic}", "data": data},
        }
        return self.client.create_job(parent=self.parent, job=job)

    def create_dispatcher(
        self, cadence: str, schedule: str, *, time_zone: str = "Etc/UTC"
    ) -> scheduler_v1.Job:
        """The dispatcher job of `cadence`: it publishes a convergence.dispatch/v1 message to the schedules topic."""
        from common.bus.messages import DispatchMessage, encode

        return self.create_job(
            f"convergence-dispatch-{cadence}",
            schedule,
            encode(DispatchMessage(cadence=cadence)),
            time_zone=time_zone,
        )


@pytest.fixture
def scheduler_location(
    scheduler_standin: SchedulerStandin, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SchedulerLocation]:
    """A location of its own per test, with GCP_PROJECT_ID, SCHEDULER_LOCATION and CLOUD_SCHEDULER_ENDPOINT
    pointing Convergence at it; forced runs are recorded in `.published`."""
    from convergence.cli.schedules import scheduler_client

    project, location = "convergence-test", f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("GCP_PROJECT_ID", project)
    monkeypatch.setenv("SCHEDULER_LOCATION", location)
    monkeypatch.setenv("CLOUD_SCHEDULER_ENDPOINT", scheduler_standin.endpoint)
    reset_settings()
    from common.settings import get_settings

    client = scheduler_client(get_settings())
    sandbox = SchedulerLocation(scheduler_standin, client, project, location)
    monkeypatch.setattr(
        scheduler_standin,
        "publish",
        lambda topic, data, attributes: sandbox.published.append(Published(topic, data, attributes)),
    )
    yield sandbox
    client.transport.close()
