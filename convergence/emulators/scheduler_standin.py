"""A local stand-in for the Cloud Scheduler API, because Google publishes no Cloud Scheduler emulator.

It serves the REST surface (`https://cloudscheduler.googleapis.com/v1/...`) on 127.0.0.1 only, so the
official google-cloud-scheduler client (`transport="rest"`, `api_endpoint` set to `endpoint`, anonymous
credentials) talks to it unchanged. Requests and answers are the API's own JSON: Job objects with `name`,
`description`, `schedule`, `timeZone`, `state`, `pubsubTarget{topicName, data, attributes}`,
`userUpdateTime`, `scheduleTime`, `lastAttemptTime`, `status`, and Google's error object
`{"error": {"code", "message", "status"}}`.

Implemented: jobs list (with pageSize/pageToken), get, create, delete, pause, resume and run.
Everything else answers 501 UNIMPLEMENTED.

How it differs from Cloud Scheduler (so nobody mistakes it for one):
- jobs live in memory and die with the process; no IAM, authentication, quotas, retries or HTTP/App Engine
  targets being called; nothing ever fires on its own: a job runs only when asked to (`:run`);
- running a job with a Pub/Sub target hands (topic, data bytes, attributes) to the `publish` callback
  when one is set, in place of publishing to Pub/Sub, and records a `Run` (the callback runs while the
  stand-in holds its lock, so it must not call the stand-in back);
- cron expressions are checked and `scheduleTime` computed with croniter in the job's time zone;
- test hooks (`runs`, `fail`, `heal`, `max_page_size`) that the real service obviously has not.

Use it as a context manager (`with SchedulerStandin() as standin:`) or start()/stop();
`python -m convergence.emulators.scheduler_standin --port N` serves it as a process for a local stack.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import datetime as dt
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from convergence.emulators.process import wait_for_stop_signal

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_PAGE_SIZE = 500
_SEGMENT = r"[^/:]+"
_PARENT = rf"projects/{_SEGMENT}/locations/{_SEGMENT}"
_JOBS_RE = re.compile(rf"^/v1/(?P<parent>{_PARENT})/jobs$")
_JOB_RE = re.compile(rf"^/v1/(?P<name>{_PARENT}/jobs/{_SEGMENT})(?::(?P<verb>[a-zA-Z]+))?$")
_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429, "INTERNAL": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
}  # fmt: skip

Publish = Callable[[str, bytes, dict[str, str]], None]


class _ApiError(Exception):
    """An answer in Google's error format: a canonical status name and a message."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": _HTTP_STATUS[self.status], "message": self.message, "status": self.status}}


@dataclass(frozen=True)
class Run:
    """One forced run (`:run`) of a job: what it would have published, and when."""

    job: str
    at: dt.datetime
    topic: str | None
    data: bytes
    attributes: dict[str, str]


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SchedulerStandin:
    """An in-memory Cloud Scheduler behind a real HTTP server on 127.0.0.1."""

    def __init__(
        self,
        port: int = 0,
        *,
        publish: Publish | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        max_page_size: int = MAX_PAGE_SIZE,
    ) -> None:
        self.publish = publish
        self.max_page_size = max_page_size
        self.runs: list[Run] = []
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._faults: list[tuple[str, int | None]] = []
        self._server = ThreadingHTTPServer((HOST, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """The `api_endpoint` for the official client (plain HTTP on loopback)."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> SchedulerStandin:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scheduler-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- test hooks ---------------------------------------------------------------------------------------

    def job(self, name: str) -> dict[str, Any]:
        """A copy of the stored Job JSON (raises KeyError for an unknown job)."""
        with self._lock:
            return copy.deepcopy(self._jobs[name])

    def runs_of(self, name: str) -> list[Run]:
        with self._lock:
            return [run for run in self.runs if run.job == name]

    def fail(self, status: str = "UNAVAILABLE", times: int | None = None) -> None:
        """Answer every request (or the next `times`) with this canonical status, e.g. PERMISSION_DENIED."""
        if status not in _HTTP_STATUS:
            raise ValueError(f"unknown status {status}")
        with self._lock:
            self._faults = [(status, times)]

    def heal(self) -> None:
        """Stop injecting failures."""
        with self._lock:
            self._faults = []

    # -- the API ------------------------------------------------------------------------------------------

    def answer(self, method: str, raw_path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer of one request; raises _ApiError for an error answer."""
        parts = urlsplit(raw_path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self._lock:
            self._take_fault()
            if match := _JOBS_RE.match(path):
                if method == "GET":
                    return self._list(match["parent"], query)
                if method == "POST":
                    return self._create(match["parent"], body)
            elif match := _JOB_RE.match(path):
                verb = match["verb"]
                handler = {
                    ("GET", None): self._get, ("DELETE", None): self._delete, ("POST", "pause"): self._pause,
                    ("POST", "resume"): self._resume, ("POST", "run"): self._run,
                }.get((method, verb))  # fmt: skip
                if handler is not None:
                    return handler(match["name"])
                if (method, verb) == ("PATCH", None):
                    raise _ApiError("UNIMPLEMENTED", "The Cloud Scheduler stand-in does not update jobs.")
            raise _ApiError("NOT_FOUND", f"The requested URL {parts.path} was not found on this server.")

    def _take_fault(self) -> None:
        if not self._faults:
            return
        status, times = self._faults[0]
        if times is not None:
            self._faults = [(status, times - 1)] if times > 1 else []
        raise _ApiError(status, f"injected by the Cloud Scheduler stand-in: {status}")

    def _stored(self, name: str) -> dict[str, Any]:
        if name not in self._jobs:
            raise _ApiError("NOT_FOUND", "Job not found.")
        return self._jobs[name]

    def _list(self, parent: str, query: dict[str, list[str]]) -> dict[str, Any]:
        token = query.get("pageToken", [""])[0]
        try:  # binascii.Error is a ValueError
            size = int(query.get("pageSize", ["0"])[0] or 0)
            offset = int(base64.urlsafe_b64decode(token).decode()) if token else 0
        except ValueError:
            raise _ApiError("INVALID_ARGUMENT", "Invalid page token or page size.") from None
        if size < 0:
            raise _ApiError("INVALID_ARGUMENT", "page_size must not be negative.")
        size = min(size or self.max_page_size, self.max_page_size)
        names = sorted(n for n in self._jobs if n.startswith(f"{parent}/jobs/"))
        page = names[offset : offset + size]
        answer: dict[str, Any] = {"jobs": [copy.deepcopy(self._jobs[n]) for n in page]}
        if offset + size < len(names):
            answer["nextPageToken"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return answer

    def _create(self, parent: str, job: dict[str, Any]) -> dict[str, Any]:
        name = job.get("name") or f"{parent}/jobs/{uuid.uuid4().hex}"
        job_id = name.rpartition("/jobs/")[2]
        if not name.startswith(f"{parent}/jobs/") or not _JOB_ID_RE.match(job_id):
            raise _ApiError("INVALID_ARGUMENT", f"Job name {name} is not in {parent} or is malformed.")
        if name in self._jobs:
            raise _ApiError("ALREADY_EXISTS", f"Job {name} already exists.")
        schedule, time_zone = job.get("schedule", ""), job.get("timeZone") or "Etc/UTC"
        if not schedule or not croniter.is_valid(schedule):
            raise _ApiError("INVALID_ARGUMENT", f"Schedule {schedule!r} is not a valid unix-cron expression.")
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _ApiError("INVALID_ARGUMENT", f"Time zone {time_zone!r} is not valid.") from None
        target = job.get("pubsubTarget")
        if target is not None:
            if not str(target.get("topicName", "")).startswith("projects/"):
                raise _ApiError("INVALID_ARGUMENT", "pubsubTarget.topicName must be projects/P/topics/T.")
            try:
                base64.b64decode(target.get("data", ""), validate=True)
            except binascii.Error:
                raise _ApiError("INVALID_ARGUMENT", "pubsubTarget.data is not base64.") from None
        elif not (job.get("httpTarget") or job.get("appEngineHttpTarget")):
            raise _ApiError("INVALID_ARGUMENT", "A job needs a target.")
        now = self._clock()
        stored = {key: value for key, value in job.items() if key not in ("lastAttemptTime", "status")}
        stored |= {"name": name, "timeZone": time_zone, "state": "ENABLED", "userUpdateTime": _rfc3339(now)}
        stored.setdefault("attemptDeadline", "180s")
        stored["scheduleTime"] = self._next_time(stored, now)
        self._jobs[name] = stored
        return copy.deepcopy(stored)

    def _next_time(self, job: dict[str, Any], now: dt.datetime) -> str:
        local = now.astimezone(ZoneInfo(job["timeZone"]))
        return _rfc3339(croniter(job["schedule"], local).get_next(dt.datetime))

    def _get(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._stored(name))

    def _delete(self, name: str) -> dict[str, Any]:
        self._stored(name)
        del self._jobs[name]
        return {}

    def _pause(self, name: str) -> dict[str, Any]:
        job = self._stored(name)
        if job["state"] != "ENABLED":
            raise _ApiError(
                "FAILED_PRECONDITION", f"Job {name} is {job['state']}; only an ENABLED job pauses."
            )
        job |= {"state": "PAUSED", "userUpdateTime": _rfc3339(self._clock())}
        return copy.deepcopy(job)

    def _resume(self, name: str) -> dict[str, Any]:
        job = self._stored(name)
        if job["state"] != "PAUSED":
            raise _ApiError(
                "FAILED_PRECONDITION", f"Job {name} is {job['state']}; only a PAUSED job resumes."
            )
        now = self._clock()
        job |= {
            "state": "ENABLED",
            "userUpdateTime": _rfc3339(now),
            "scheduleTime": self._next_time(job, now),
        }
        return copy.deepcopy(job)

    def _run(self, name: str) -> dict[str, Any]:
        job = self._stored(name)
        now = self._clock()
        target = job.get("pubsubTarget") or {}
        data = base64.b64decode(target.get("data", ""))
        attributes = dict(target.get("attributes") or {})
        self.runs.append(Run(name, now, target.get("topicName"), data, attributes))
        status: dict[str, Any] = {}
        if target and self.publish is not None:
            try:
                self.publish(target["topicName"], data, attributes)
            except Exception:  # a failed attempt is the job's status, as Cloud Scheduler reports it
                log.exception("publishing the run of %s failed", name)
                status = {"code": 13, "message": f"Publishing to {target['topicName']} failed."}
        job |= {"lastAttemptTime": _rfc3339(now), "status": status}
        return copy.deepcopy(job)


def _handler_for(standin: SchedulerStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "SchedulerStandin"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes on a kept-alive socket

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise _ApiError("INVALID_ARGUMENT", "The request body must be a JSON object.")
                status, answer = HTTPStatus.OK, standin.answer(self.command, self.path, body)
            except ValueError:
                error = _ApiError("INVALID_ARGUMENT", "The request body is not valid JSON.")
                status, answer = HTTPStatus(_HTTP_STATUS[error.status]), error.body()
            except _ApiError as error:
                status, answer = HTTPStatus(_HTTP_STATUS[error.status]), error.body()
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("scheduler stand-in: " + format, *args)

    return Handler


def main() -> None:
    """Serve the stand-in until SIGTERM or Ctrl-C (a local stack runs it as a child process)."""
    parser = argparse.ArgumentParser(description="Local Cloud Scheduler stand-in (no emulator exists).")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    standin = SchedulerStandin(args.port).start()
    print(f"Cloud Scheduler stand-in serving on {standin.endpoint}", flush=True)
    wait_for_stop_signal()
    standin.stop()


if __name__ == "__main__":
    main()
