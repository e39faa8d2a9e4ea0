"""`convergence schedules ...`: the Cloud Scheduler dispatcher jobs of this project, one per cadence.

Terraform creates the jobs; these commands list, pause, resume and force-run them through the official
google-cloud-scheduler client. Only jobs named `convergence-dispatch-{cadence}` are ever touched, so
other jobs of the project are neither shown nor changed. With CLOUD_SCHEDULER_ENDPOINT set (a local
stand-in) the client talks to it with anonymous credentials; otherwise to Google with the application
default credentials. convergence/cli/__init__.py registers the app with `app.add_typer(schedules_app, name="schedules")`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from common.bus.messages import CADENCE_PATTERN as DISPATCH_CADENCE_PATTERN
from common.errors import (
    BadRequest,
    ConfigurationError,
    ConvergenceError,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    TerminalError,
)
from convergence.cli.output import error_line, fail

if TYPE_CHECKING:
    from google.cloud import scheduler_v1

    from common.settings import Settings

schedules_app = typer.Typer(
    help="Cloud Scheduler dispatcher jobs (one per cadence): list, pause, resume, run now.",
    no_args_is_help=True,
    add_completion=False,
)


def _console() -> Console:
    """A console per command, so the terminal width (COLUMNS) of this invocation is the one used."""
    return Console()


JOB_PREFIX = "convergence-dispatch-"
CADENCE_PATTERN = re.compile(DISPATCH_CADENCE_PATTERN)  # DispatchMessage.cadence
GOOGLE_ENDPOINT = "cloudscheduler.googleapis.com"
REQUEST_TIMEOUT_SECONDS = 30.0
READ_RETRY_SECONDS = 20.0
NameArgument = Annotated[
    str | None,
    typer.Argument(help="Cadence (daily) or job id (convergence-dispatch-daily).", show_default=False),
]
AllOption = Annotated[bool, typer.Option("--all", help="Every dispatcher job of the location.")]


def scheduler_client(settings: Settings) -> scheduler_v1.CloudSchedulerClient:
    """The official client: the stand-in at CLOUD_SCHEDULER_ENDPOINT (anonymous), else Google (ADC)."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import scheduler_v1

    endpoint = settings.cloud_scheduler_endpoint
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        # An override without a scheme is a local stand-in, reached over plain HTTP on loopback.
        api_endpoint = endpoint if re.match(r"^https?://", endpoint) else f"http://{endpoint}"
        return scheduler_v1.CloudSchedulerClient(
            transport="rest",
            client_options={"api_endpoint": api_endpoint},
            credentials=AnonymousCredentials(),
        )
    try:
        return scheduler_v1.CloudSchedulerClient(transport="rest")
    except DefaultCredentialsError:
        raise ConfigurationError(
            "no Google Cloud credentials: run `gcloud auth application-default login`,"
            " or set CLOUD_SCHEDULER_ENDPOINT to a local Cloud Scheduler stand-in"
        ) from None


def location_of(settings: Settings) -> str:
    """The parent of the dispatcher jobs: projects/{GCP_PROJECT_ID}/locations/{SCHEDULER_LOCATION}."""
    return f"projects/{settings.gcp_project_id}/locations/{settings.scheduler_location}"


def job_name(parent: str, name: str) -> str:
    """The full job name of a cadence (`daily`), a job id (`convergence-dispatch-daily`) or a full name."""
    text = name.strip().removeprefix(f"{parent}/jobs/")
    cadence = text.removeprefix(JOB_PREFIX)
    if not CADENCE_PATTERN.match(cadence):
        raise BadRequest(
            f"{name!r} is not a dispatcher cadence or job id (e.g. daily or {JOB_PREFIX}daily)",
            code="bad_name",
        )
    return f"{parent}/jobs/{JOB_PREFIX}{cadence}"


def job_id(job: scheduler_v1.Job) -> str:
    return job.name.rpartition("/jobs/")[2]


def is_dispatcher(job: scheduler_v1.Job) -> bool:
    return job_id(job).startswith(JOB_PREFIX)


def _reason(exc: Any) -> str:
    """The service's own message, without the method and URL the REST client puts in front of it."""
    try:
        return str(exc.response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError, AttributeError):  # no JSON error body: keep the client's message
        return str(exc.message)


@contextmanager
def scheduler_errors(settings: Settings, subject: str) -> Iterator[None]:
    """Turn what the client raises into one Convergence error that names `subject` (a job or location)."""
    import requests
    from google.api_core import exceptions as google
    from google.auth.exceptions import GoogleAuthError

    endpoint = settings.cloud_scheduler_endpoint or GOOGLE_ENDPOINT
    try:
        yield
    except google.NotFound as exc:
        if subject.startswith("projects/"):  # the location itself
            raise NotFound(f"Cloud Scheduler does not know {subject}: {_reason(exc)}") from None
        raise NotFound(f"no dispatcher job {subject} in {location_of(settings)}") from None
    except (google.Forbidden, google.Unauthorized) as exc:  # PermissionDenied, Unauthenticated over REST
        raise Forbidden(f"Cloud Scheduler denied access to {subject}: {_reason(exc)}") from None
    except (google.ServiceUnavailable, google.DeadlineExceeded, google.RetryError, requests.RequestException):
        raise DependencyUnavailable(
            f"Cloud Scheduler at {endpoint} is unreachable; try again later"
        ) from None
    except google.GoogleAPICallError as exc:
        raise TerminalError(f"Cloud Scheduler refused the request for {subject}: {_reason(exc)}") from None
    except GoogleAuthError as exc:
        raise ConfigurationError(f"Google Cloud credentials are not usable: {type(exc).__name__}") from None


def _read_retry() -> Any:
    from google.api_core import exceptions as google
    from google.api_core import retry

    return retry.Retry(
        initial=0.5, maximum=4.0, multiplier=2.0, timeout=READ_RETRY_SECONDS,
        predicate=retry.if_exception_type(google.ServiceUnavailable, google.DeadlineExceeded),
    )  # fmt: skip


def dispatcher_jobs(client: scheduler_v1.CloudSchedulerClient, parent: str) -> list[scheduler_v1.Job]:
    """Every `convergence-dispatch-*` job of `parent`, through all pages, by name."""
    pages = client.list_jobs(parent=parent, retry=_read_retry(), timeout=REQUEST_TIMEOUT_SECONDS)
    return sorted((job for job in pages if is_dispatcher(job)), key=lambda job: job.name)


def _timestamp(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def job_view(job: scheduler_v1.Job) -> dict[str, Any]:
    """What an operator sees of one job (also the `--json` shape)."""
    failed = "status" in job and job.status.code != 0
    return {
        "job": job_id(job),
        "cadence": job_id(job).removeprefix(JOB_PREFIX),
        "schedule": job.schedule,
        "time_zone": job.time_zone,
        "state": job.state.name,
        "last_attempt": _timestamp(job.last_attempt_time),
        "last_attempt_failed": failed,
        "last_attempt_error": job.status.message if failed else None,
        "next_run": _timestamp(job.schedule_time),
        "topic": job.pubsub_target.topic_name or None,
    }


def _short(timestamp: str | None) -> str | None:
    """2026-05-01T06:00:00Z as 2026-05-01 06:00 (the column header says UTC)."""
    return timestamp[:16].replace("T", " ") if timestamp else None


def _jobs_table(parent: str, views: list[dict[str, Any]]) -> Table:
    """One row per job; times in UTC (the next run is in `--json`)."""
    table = Table(
        title=f"dispatcher jobs in {parent}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    table.add_column("job", overflow="fold")  # the one column that folds in a narrow terminal
    for column in ("schedule", "time zone", "state", "last attempt (UTC)"):
        table.add_column(column, no_wrap=True)
    for view in views:
        state = view["state"] if view["state"] == "ENABLED" else f"[yellow]{view['state']}[/yellow]"
        last = _short(view["last_attempt"]) or "never"
        if view["last_attempt_failed"]:
            last = f"{last} [red]failed[/red]"
        table.add_row(view["job"], view["schedule"], view["time_zone"], state, last)
    return table


def _settings() -> Settings:
    from common.settings import get_settings

    return get_settings()


@schedules_app.command("list")
def list_jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as a JSON list.")] = False,
) -> None:
    """List the dispatcher jobs: schedule, time zone, state, last attempt (and next run with --json)."""
    try:
        settings = _settings()
        parent = location_of(settings)
        with scheduler_errors(settings, parent), scheduler_client(settings) as client:
            views = [job_view(job) for job in dispatcher_jobs(client, parent)]
    except ConvergenceError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(views, sort_keys=True))
    elif not views:
        _console().print(f"no dispatcher jobs in {parent} (Terraform creates them)", soft_wrap=True)
    else:
        _console().print(_jobs_table(parent, views))


def _targets(
    client: scheduler_v1.CloudSchedulerClient, settings: Settings, full_name: str | None
) -> list[scheduler_v1.Job]:
    """The named job (full_name), or every dispatcher job of the location (None)."""
    if full_name is None:
        return dispatcher_jobs(client, location_of(settings))
    with scheduler_errors(settings, full_name.rpartition("/jobs/")[2]):
        return [client.get_job(name=full_name, retry=_read_retry(), timeout=REQUEST_TIMEOUT_SECONDS)]


def _change_state(name: str | None, all_jobs: bool, action: str) -> None:
    """Pause or resume one named job or every dispatcher job; a job already there is left alone."""
    wanted = "PAUSED" if action == "pause" else "ENABLED"
    done = "paused" if action == "pause" else "resumed"
    outcomes: list[tuple[str, str, str]] = []
    failures: list[str] = []
    try:
        if (name is None) != all_jobs:
            raise BadRequest(
                "name one job (its cadence or job id) or give --all, not both", code="bad_arguments"
            )
        settings = _settings()
        parent = location_of(settings)
        full_name = None if all_jobs else job_name(parent, name or "")
        with scheduler_errors(settings, parent), scheduler_client(settings) as client:
            for job in _targets(client, settings, full_name):
                if job.state.name == wanted:
                    outcomes.append((job_id(job), job.state.name, f"already {wanted.lower()}"))
                    continue
                try:
                    with scheduler_errors(settings, job_id(job)):
                        change = client.pause_job if action == "pause" else client.resume_job
                        changed = change(name=job.name, timeout=REQUEST_TIMEOUT_SECONDS)
                    outcomes.append((job_id(job), changed.state.name, done))
                except ConvergenceError as exc:
                    if not all_jobs:
                        raise
                    failures.append(exc.message)
                    outcomes.append((job_id(job), job.state.name, "failed"))
    except ConvergenceError as exc:
        fail(exc)
    if not outcomes:
        _console().print(f"no dispatcher jobs in {parent}", soft_wrap=True)
        return
    table = Table(title=f"{action} in {parent}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("job", no_wrap=True)
    table.add_column("state")
    table.add_column("result")
    for row in outcomes:
        table.add_row(*row)
    _console().print(table)
    for message in failures:
        error_line(message)
    if failures:
        raise typer.Exit(2)


@schedules_app.command()
def pause(name: NameArgument = None, all_jobs: AllOption = False) -> None:
    """Pause a dispatcher job (or --all): its cadence stops starting scheduled runs until resumed."""
    _change_state(name, all_jobs, "pause")


@schedules_app.command()
def resume(name: NameArgument = None, all_jobs: AllOption = False) -> None:
    """Resume a paused dispatcher job (or --all)."""
    _change_state(name, all_jobs, "resume")


@schedules_app.command("run")
def run_now(
    name: Annotated[str, typer.Argument(help="Cadence (daily) or job id (convergence-dispatch-daily).")],
) -> None:
    """Run a dispatcher job now: Cloud Scheduler publishes its dispatch message at once."""
    try:
        settings = _settings()
        parent = location_of(settings)
        full_name = job_name(parent, name)
        with (
            scheduler_errors(settings, full_name.rpartition("/jobs/")[2]),
            scheduler_client(settings) as client,
        ):
            job = client.run_job(name=full_name, timeout=REQUEST_TIMEOUT_SECONDS)
    except ConvergenceError as exc:
        fail(exc)
    view = job_view(job)
    target = f" to {view['topic']}" if view["topic"] else ""
    paused = " (the job stays PAUSED)" if view["state"] == "PAUSED" else ""
    _console().print(
        f"{view['job']}: run requested; its dispatch message is published{target}{paused}", soft_wrap=True
    )
