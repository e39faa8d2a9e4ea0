"""`convergence runs bulk` and `convergence runs bulk-status`: one template for many tenants, and where it stands.

Both speak the HTTP API (POST /api/v1/admin/runs/bulk, GET /api/v1/admin/runs/bulk/{bulk_id}) with the root
key, so authentication, validation and answers are the API's own:
- in-process by default, through the WSGI application `convergence serve` runs, on this machine's platform
  (embedded unless configured otherwise; the root key is CA_ROOT_API_KEY or CONVERGENCE_HOME/root_key). With
  the local bus nothing else would handle the bulk's messages, so the command returns once this process's
  bus has handled them: every run started and finished;
- against a deployment with `--url` (the onboard function, or a `convergence serve`) and `--root-key`
  (or CONVERGENCE_URL and CA_ROOT_API_KEY).

`--wait` follows the bulk until every tenant is COMPLETE, FAILED or SKIPPED. Exit codes: 0 accepted (with
--wait: done, nothing FAILED), 1 with --wait when some tenant FAILED or the wait timed out, 2 when the API
refused the request or could not be reached. convergence/cli/__init__.py registers the app with
`app.add_typer(runs_app, name="runs")`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from common.errors import BadRequest, ConvergenceError, DependencyUnavailable, TerminalError
from convergence.cli.output import fail

runs_app = typer.Typer(
    help="Runs of many tenants: start a bulk run of one template, follow where it stands.",
    no_args_is_help=True,
    add_completion=False,
)
BULK_PATH = "/api/v1/admin/runs/bulk"
STATUSES = ("PENDING", "RUNNING", "COMPLETE", "FAILED", "SKIPPED")
REQUEST_TIMEOUT_SECONDS = 60.0

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="CONVERGENCE_URL", help="A deployment's onboard function (or `convergence serve`)."
    ),
]
RootKeyOption = Annotated[
    str | None,
    typer.Option("--root-key", envvar="CA_ROOT_API_KEY", help="Root key for --url.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer for scripts.")]
WaitOption = Annotated[bool, typer.Option("--wait", help="Follow the bulk until every tenant's run ended.")]
IntervalOption = Annotated[float, typer.Option(help="Seconds between status reads with --wait.", min=0.1)]
TimeoutOption = Annotated[float, typer.Option(help="Longest --wait, in seconds.", min=1)]


class RefusedByApi(TerminalError):
    """The API answered with an error; its message is the API's own."""


class AdminApi:
    """The bulk routes, reached in-process (this machine's platform) or over HTTP (`--url`)."""

    def __init__(self, url: str | None, root_key: str | None) -> None:
        self.url = url.rstrip("/") if url else None
        self.runtime: Any = None
        if self.url is None:
            self.runtime, key = _in_process_runtime()
            from common.wiring import wsgi_app

            self.client: Any = wsgi_app("both").test_client()
        else:
            import httpx

            if not root_key:
                raise BadRequest("--url needs the root key: give --root-key or set CA_ROOT_API_KEY")
            key = root_key
            self.client = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_SECONDS)
        self.headers = {"X-CA-Root-Key": key}

    def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The JSON answer of a successful request; an error answer raises with the API's message."""
        if self.url is None:
            response = self.client.open(path, method=method, headers=self.headers, json=body)
            status, text = response.status_code, response.get_data(as_text=True)
        else:
            import httpx

            try:
                response = self.client.request(method, path, headers=self.headers, json=body)
            except httpx.HTTPError as exc:
                raise DependencyUnavailable(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
            status, text = response.status_code, response.text
        try:
            answer = json.loads(text)
        except ValueError:
            raise DependencyUnavailable(f"{method} {path} answered {status} without JSON") from None
        if status >= 400:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise RefusedByApi(f"{status} {message or text[:200]}", code=str(answer.get("error", "error")))
        return answer

    def settle(self, timeout: float) -> bool:
        """In-process with the local bus: handle every message this process published (False if time ran out)."""
        drain = getattr(self.runtime.bus, "drain", None) if self.runtime is not None else None
        return drain(timeout) if drain is not None else True

    def close(self) -> None:
        if self.url is not None:
            self.client.close()
        else:
            from common.wiring import reset_runtime

            reset_runtime()


def _in_process_runtime() -> tuple[Any, str]:
    """This machine's runtime from settings, with a root key (generated once in embedded mode), and the key."""
    from common.crypto.root_key import ensure_root_key
    from common.settings import get_settings
    from common.wiring import build_runtime, set_runtime

    settings, generated = ensure_root_key(get_settings())
    if generated:
        Console(stderr=True).print(f"root key generated and kept in {settings.root_key_path}", soft_wrap=True)
    runtime = build_runtime(settings)
    set_runtime(runtime)
    return runtime, settings.ca_root_api_key.get_secret_value()  # type: ignore[union-attr]


@contextmanager
def admin_api(url: str | None, root_key: str | None) -> Iterator[AdminApi]:
    api = AdminApi(url, root_key)
    try:
        yield api
    finally:
        api.close()


def parse_tenants(text: str) -> str | list[str]:
    """'*' for every active tenant, else comma-separated tenant ids."""
    if text.strip() == "*":
        return "*"
    tenants = [t.strip() for t in text.split(",") if t.strip()]
    if not tenants:
        raise BadRequest("--tenants must be '*' or comma-separated tenant ids")
    return tenants


def parse_parameters(pairs: list[str]) -> dict[str, str]:
    """NAME=VALUE pairs (a value may itself hold '=')."""
    parameters: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadRequest(f"--param {pair!r} is not NAME=VALUE (e.g. --param date=2025-11-15)")
        parameters[name.strip()] = value
    return parameters


def follow(api: AdminApi, bulk_id: str, *, interval: float, timeout: float) -> dict[str, Any]:
    """Read the bulk's status until it is done or `timeout` seconds passed; the last status read."""
    deadline = time.monotonic() + timeout
    api.settle(timeout)
    while True:
        status = api.send("GET", f"{BULK_PATH}/{bulk_id}")
        if status["done"] or time.monotonic() + interval > deadline:
            return status
        time.sleep(interval)


def _console() -> Console:
    return Console()


def print_status(status: dict[str, Any]) -> None:
    """The counts, then the failures and skipped tenants the API listed."""
    console = _console()
    counts = status["counts"]
    state = "done" if status["done"] else "in progress"
    console.print(
        f"bulk {status['bulk_id']} of {status['template']} ({state}): {status['tenants']} tenants,"
        f" {status['chunks']} chunks, parameters {json.dumps(status['parameters'], sort_keys=True)}",
        soft_wrap=True,
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in STATUSES:
        table.add_column(name, justify="right")
    table.add_row(*(str(counts[name]) for name in STATUSES))
    console.print(table)
    if status["failures"]:
        failures = Table(title="failed", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("tenant", "run", "error"):
            failures.add_column(column, overflow="fold")
        for failure in status["failures"]:
            failures.add_row(failure["tenant_id"], failure["pipeline_logging_id"] or "-",
                             failure["error_message"] or "-")  # fmt: skip
        console.print(failures)
    reasons: dict[str, int] = {}
    for skip in status["skipped"]:
        reasons[skip["reason"] or "-"] = reasons.get(skip["reason"] or "-", 0) + 1
    for reason, count in sorted(reasons.items()):
        console.print(f"skipped: {count} x {reason}", soft_wrap=True)
    if counts["FAILED"] > len(status["failures"]) or counts["SKIPPED"] > len(status["skipped"]):
        console.print("(the API lists the first failures and skipped tenants only; all are counted)")


def _exit_code(status: dict[str, Any]) -> int:
    return 0 if status["done"] and status["counts"]["FAILED"] == 0 else 1


@runs_app.command("bulk")
def bulk(
    template: Annotated[str, typer.Option(help="provider/domain/template, e.g. gcp/cost/cost_billing.")],
    tenants: Annotated[str, typer.Option(help="'*' for every active tenant, or tenant ids: acme,globex.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", help="NAME=VALUE run parameter; repeat for more.")
    ] = None,
    trigger_by: Annotated[str | None, typer.Option(help="Who asks; default bulk:<bulk_id>.")] = None,
    wait: WaitOption = False,
    interval: IntervalOption = 5.0,
    timeout: TimeoutOption = 3600.0,
    url: UrlOption = None,
    root_key: RootKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a template for many tenants; the API checks template and parameters before anything starts."""
    try:
        body: dict[str, Any] = {"template": template, "tenants": parse_tenants(tenants),
                                "parameters": parse_parameters(param or [])}  # fmt: skip
        if trigger_by is not None:
            body["trigger_by"] = trigger_by
        with admin_api(url, root_key) as api:
            accepted = api.send("POST", BULK_PATH, body)
            if not wait:
                api.settle(timeout)  # in-process: the runs start (and end) here, before this process exits
                if as_json:
                    print(json.dumps(accepted, sort_keys=True))
                else:
                    _console().print(
                        f"bulk {accepted['bulk_id']} accepted: {accepted['template']} for {accepted['tenants']}"
                        f" tenants in {accepted['chunks']} chunks, parameters"
                        f" {json.dumps(accepted['parameters'], sort_keys=True)}",
                        soft_wrap=True,
                    )
                    _console().print(
                        f"status: convergence runs bulk-status {accepted['bulk_id']}", soft_wrap=True
                    )
                return
            status = follow(api, accepted["bulk_id"], interval=interval, timeout=timeout)
    except ConvergenceError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(status, sort_keys=True))
    else:
        print_status(status)
    raise typer.Exit(_exit_code(status))


@runs_app.command("bulk-status")
def bulk_status(
    bulk_id: Annotated[str, typer.Argument(help="The bulk_id `runs bulk` printed.")],
    wait: WaitOption = False,
    interval: IntervalOption = 5.0,
    timeout: TimeoutOption = 3600.0,
    url: UrlOption = None,
    root_key: RootKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Where a bulk run stands: tenants by run status, failures, skipped tenants and why."""
    try:
        with admin_api(url, root_key) as api:
            if wait:
                status = follow(api, bulk_id, interval=interval, timeout=timeout)
            else:
                status = api.send("GET", f"{BULK_PATH}/{bulk_id}")
    except ConvergenceError as exc:
        fail(exc)
    if as_json:
        print(json.dumps(status, sort_keys=True))
    else:
        print_status(status)
    if wait:
        raise typer.Exit(_exit_code(status))
