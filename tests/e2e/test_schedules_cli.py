"""`convergence schedules ...` as an operator runs it: the official google-cloud-scheduler client against the
Cloud Scheduler stand-in (no Cloud Scheduler emulator exists), jobs seeded the way Terraform creates them.

Each test has a location of its own on the session's stand-in (tests/plugins/scheduler_standin.py): two
dispatcher jobs and one unrelated job of the same project, which the commands must never show or touch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from common.bus.messages import DispatchMessage
from common.settings import reset_settings
from convergence.cli import app
from convergence.emulators.process import free_port

CONVERGENCE = Path(sys.executable).with_name("convergence")
DAILY = "convergence-dispatch-daily"
QUARTER_HOURLY = "convergence-dispatch-every-15-minutes"
UNRELATED = "nightly-backup"


@pytest.fixture
def jobs(scheduler_location):
    """Two dispatcher jobs and an unrelated job in a fresh location; the location's sandbox."""
    scheduler_location.create_dispatcher("daily", "0 6 * * *", time_zone="Europe/Berlin")
    scheduler_location.create_dispatcher("every-15-minutes", "*/15 * * * *")
    scheduler_location.create_job(UNRELATED, "0 2 * * *", b"{}", topic="backups")
    return scheduler_location


def schedules(*args: str):
    return CliRunner().invoke(app, ["schedules", *args], env={"COLUMNS": "200"})


def state_of(sandbox, job_id: str) -> str:
    return sandbox.standin.job(f"{sandbox.parent}/jobs/{job_id}")["state"]


def listed(sandbox) -> dict[str, dict]:
    result = schedules("list", "--json")
    assert result.exit_code == 0, result.output
    return {view["job"]: view for view in json.loads(result.output)}


def assert_one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_list_shows_the_dispatcher_jobs_and_hides_every_other_job(jobs):
    result = schedules("list")
    assert result.exit_code == 0, result.output
    assert DAILY in result.output and QUARTER_HOURLY in result.output
    assert UNRELATED not in result.output
    daily_row = next(line for line in result.output.splitlines() if DAILY in line)
    for shown in ("0 6 * * *", "Europe/Berlin", "ENABLED", "never"):
        assert shown in daily_row, daily_row


def test_list_json_gives_schedule_time_zone_state_and_target_of_each_job(jobs):
    views = listed(jobs)
    assert sorted(views) == [DAILY, QUARTER_HOURLY]
    daily = views[DAILY]
    assert (daily["cadence"], daily["schedule"], daily["time_zone"], daily["state"]) == (
        "daily", "0 6 * * *", "Europe/Berlin", "ENABLED",
    )  # fmt: skip
    assert daily["last_attempt"] is None and daily["next_run"] is not None
    assert daily["topic"] == f"projects/{jobs.project}/topics/convergence-schedules"


def test_list_follows_every_page_of_the_listing(jobs, monkeypatch):
    monkeypatch.setattr(jobs.standin, "max_page_size", 1)
    assert sorted(listed(jobs)) == [DAILY, QUARTER_HOURLY]


def test_list_of_an_empty_location_says_terraform_creates_the_jobs(scheduler_location):
    result = schedules("list")
    assert result.exit_code == 0, result.output
    assert "no dispatcher jobs" in result.output and scheduler_location.location in result.output


def test_pause_by_cadence_pauses_only_that_job(jobs):
    result = schedules("pause", "daily")
    assert result.exit_code == 0, result.output
    assert "paused" in result.output
    assert state_of(jobs, DAILY) == "PAUSED"
    assert state_of(jobs, QUARTER_HOURLY) == "ENABLED"
    assert listed(jobs)[DAILY]["state"] == "PAUSED"


def test_pausing_a_paused_job_again_succeeds_and_says_so(jobs):
    assert schedules("pause", DAILY).exit_code == 0
    again = schedules("pause", DAILY)
    assert again.exit_code == 0, again.output
    assert "already paused" in again.output
    assert state_of(jobs, DAILY) == "PAUSED"


def test_pause_all_then_resume_all_changes_every_dispatcher_job_and_nothing_else(jobs):
    paused = schedules("pause", "--all")
    assert paused.exit_code == 0, paused.output
    assert (state_of(jobs, DAILY), state_of(jobs, QUARTER_HOURLY)) == ("PAUSED", "PAUSED")
    assert state_of(jobs, UNRELATED) == "ENABLED"

    resumed = schedules("resume", "--all")
    assert resumed.exit_code == 0, resumed.output
    assert (state_of(jobs, DAILY), state_of(jobs, QUARTER_HOURLY)) == ("ENABLED", "ENABLED")
    assert DAILY in resumed.output and QUARTER_HOURLY in resumed.output


def test_resume_by_job_id_enables_a_paused_job(jobs):
    assert schedules("pause", "every-15-minutes").exit_code == 0
    result = schedules("resume", QUARTER_HOURLY)
    assert result.exit_code == 0, result.output
    assert state_of(jobs, QUARTER_HOURLY) == "ENABLED"


def test_run_now_delivers_the_dispatch_message_of_that_cadence(jobs):
    result = schedules("run", "daily")
    assert result.exit_code == 0, result.output
    assert "run requested" in result.output
    assert len(jobs.standin.runs_of(f"{jobs.parent}/jobs/{DAILY}")) == 1
    assert jobs.standin.runs_of(f"{jobs.parent}/jobs/{QUARTER_HOURLY}") == []
    [published] = jobs.published
    assert published.topic == f"projects/{jobs.project}/topics/convergence-schedules"
    message = DispatchMessage.model_validate_json(published.data)
    assert message.cadence == "daily"
    assert listed(jobs)[DAILY]["last_attempt"] is not None


@pytest.mark.parametrize("command", ["pause", "resume", "run"])
def test_an_unknown_cadence_is_one_error_line(jobs, command):
    assert_one_error_line(schedules(command, "weekly"), "no dispatcher job convergence-dispatch-weekly")


def test_a_job_that_is_not_a_dispatcher_cannot_be_paused(jobs):
    assert_one_error_line(schedules("pause", UNRELATED), f"convergence-dispatch-{UNRELATED}")
    assert state_of(jobs, UNRELATED) == "ENABLED"


def test_a_name_that_is_no_cadence_is_refused_before_calling_cloud_scheduler(jobs):
    assert_one_error_line(schedules("run", "projects/other/locations/x/jobs/y"), "not a dispatcher cadence")
    assert [run for run in jobs.standin.runs if run.job.startswith(jobs.parent)] == []


def test_pause_needs_a_name_or_all_but_not_both(jobs):
    assert_one_error_line(schedules("pause"), "--all")
    assert_one_error_line(schedules("pause", "daily", "--all"), "--all")
    assert state_of(jobs, DAILY) == "ENABLED"


def test_permission_denied_is_one_error_line(jobs):
    jobs.standin.fail("PERMISSION_DENIED", times=1)
    try:
        assert_one_error_line(schedules("pause", "daily"), "denied", DAILY)
    finally:
        jobs.standin.heal()
    assert state_of(jobs, DAILY) == "ENABLED"


def test_an_unreachable_cloud_scheduler_is_one_error_line(monkeypatch):
    monkeypatch.setenv("CLOUD_SCHEDULER_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    reset_settings()
    assert_one_error_line(schedules("list"), "unreachable", "127.0.0.1")


def test_convergence_help_lists_the_schedules_commands():
    result = CliRunner().invoke(app, ["schedules", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for command in ("list", "pause", "resume", "run"):
        assert command in result.output


def test_the_installed_command_runs_a_job_now_from_its_environment(jobs):
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [str(CONVERGENCE), "schedules", "run", "every-15-minutes"],
        check=False, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{QUARTER_HOURLY}: run requested" in done.stdout
    assert [DispatchMessage.model_validate_json(p.data).cadence for p in jobs.published] == [
        "every-15-minutes"
    ]


def test_the_standin_answers_an_unknown_job_with_googles_error_object(scheduler_location):
    import httpx

    url = (
        f"{scheduler_location.standin.endpoint}/v1/{scheduler_location.parent}/jobs/convergence-dispatch-none"
    )
    response = httpx.get(url, timeout=10)
    assert response.status_code == 404
    assert response.json() == {"error": {"code": 404, "message": "Job not found.", "status": "NOT_FOUND"}}
