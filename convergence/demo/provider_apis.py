"""Local stand-in for the OpenAI organization costs API and the Anthropic cost report API.

No real provider is reachable here, so this server replays the documented response shapes of
`GET /v1/organization/costs` and `GET /v1/organizations/cost_report` from seeded, deterministic data: a few
projects and workspaces, current models and line items, plausible daily amounts. It keeps the providers'
quirks (OpenAI dollars sometimes as strings, sometimes as numbers; Anthropic amounts as decimal strings in
cents; null projects, workspaces and descriptions), honours the query window, `limit` (buckets per page),
group-by and page cursors, checks the admin key, and can inject faults (429 with Retry-After, 5xx, broken
bodies, a cursor that repeats). Tests and `convergence demo` point the loaders at it through
OPENAI_API_BASE / ANTHROPIC_API_BASE and compare what was loaded with `expected_total`.

This module is the HTTP server: `ProviderApiServer` (lifecycle, fault injection, the record of requests,
paging) and its request handler (paths, authentication, faults). The seeded data is in
provider_cost_data.py and the rules for queries, buckets, cursors and error bodies in
provider_api_protocol.py; import from here.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import string
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from convergence.demo.provider_api_protocol import (
    DAY,
    DESCRIBED,
    GROUPS,
    MAX_LIMIT,
    PATHS,
    UTC,
    bucket,
    decode_cursor,
    encode_cursor,
    error_body,
    grouped,
    parse_query,
)
from convergence.demo.provider_cost_data import (
    ANTHROPIC_MODELS,
    ANTHROPIC_TOKENS,
    ANTHROPIC_TOOLS,
    ANTHROPIC_WORKSPACES,
    OPENAI_LINE_ITEMS,
    OPENAI_PROJECTS,
    PROVIDERS,
    Provider,
    day_costs,
    dollars,
)

__all__ = [
    "ANTHROPIC_MODELS", "ANTHROPIC_TOKENS", "ANTHROPIC_TOOLS", "ANTHROPIC_WORKSPACES", "DAY", "DESCRIBED",
    "GROUPS", "MAX_LIMIT", "OPENAI_LINE_ITEMS", "OPENAI_PROJECTS", "PATHS", "PROVIDERS", "UTC", "Fault",
    "Provider", "ProviderApiServer", "RecordedRequest",
]  # fmt: skip


@dataclass(frozen=True)
class Fault:
    """One injected answer in place of a real one: a status, optional Retry-After, optional raw body."""

    status: int = 429
    retry_after: str | None = None
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class RecordedRequest:
    provider: str
    path: str
    query: dict[str, list[str]]
    status: int


def _random_key(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))


class ProviderApiServer:
    """Both providers' cost endpoints on 127.0.0.1 at a free port; a context manager that starts and stops it."""

    def __init__(
        self,
        *,
        seed: int = 2026,
        openai_key: str | None = None,
        anthropic_key: str | None = None,
        results_per_page: int | None = None,
    ) -> None:
        self.seed = seed
        self.keys = {
            "openai": openai_key or _random_key("sk-admin-"),
            "anthropic": anthropic_key or _random_key("sk-ant-admin01-"),
        }
        # Beyond `limit` buckets, also split a bucket's results over pages (providers may; loaders must cope).
        if results_per_page is not None and results_per_page < 1:
            raise ValueError("results_per_page must be at least 1")
        self.results_per_page = results_per_page
        self.requests: list[RecordedRequest] = []
        self._faults: dict[str, deque[Fault]] = {p: deque() for p in PROVIDERS}
        self._looping_cursor: set[str] = set()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> ProviderApiServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        httpd.replay = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="provider-apis", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT: the value of OPENAI_API_BASE and ANTHROPIC_API_BASE."""
        if self._httpd is None:
            raise RuntimeError("the provider API server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- data and expectations -------------------------------------------------------------------------
    def costs(self, provider: Provider, day: dt.date) -> list[dict[str, Any]]:
        """The results of one day's bucket, grouped by both dimensions, exactly as served."""
        return day_costs(self.seed, provider, day)

    def expected_total(self, provider: Provider, day: dt.date) -> Decimal:
        """The day's total in dollars, exact."""
        return sum((dollars(provider, r) for r in self.costs(provider, day)), Decimal(0))

    def expected_rows(self, provider: Provider, day: dt.date) -> int:
        return len(self.costs(provider, day))

    # -- faults ----------------------------------------------------------------------------------------
    def inject(self, provider: Provider, fault: Fault, times: int = 1) -> None:
        """Answer the provider's next `times` requests with `fault` (after any faults already queued)."""
        with self._lock:
            self._faults[provider].extend([fault] * times)

    def loop_cursor(self, provider: Provider) -> None:
        """From now on, every page says has_more with the cursor it was asked for (a broken provider)."""
        with self._lock:
            self._looping_cursor.add(provider)

    def requests_to(self, provider: Provider) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.provider == provider]

    def _next_fault(self, provider: Provider) -> Fault | None:
        with self._lock:
            return self._faults[provider].popleft() if self._faults[provider] else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- pages -----------------------------------------------------------------------------------------
    def page(self, provider: Provider, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """(status, body) of one list request, validated as the provider validates it."""
        try:
            start, end, limit, groups = parse_query(provider, query)
            bucket_index, offset = decode_cursor(query.get("page", [None])[0], start)
        except (ValueError, OverflowError, OSError) as exc:
            return 400, error_body(provider, "invalid_request_error", str(exc))
        days = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        data: list[dict[str, Any]] = []
        room = self.results_per_page  # results this page may still hold; None: whole buckets only
        position = None  # (bucket index, result offset) where the next page starts
        for index in range(bucket_index, len(days)):
            if len(data) == limit or room == 0:
                position = (index, 0)
                break
            results = grouped(provider, self.costs(provider, days[index]), groups)[offset:]
            if room is not None and len(results) > room:
                data.append(bucket(provider, days[index], results[:room]))
                position = (index, offset + room)
                break
            data.append(bucket(provider, days[index], results))
            room = None if room is None else room - len(results)
            offset = 0
        if provider in self._looping_cursor:
            cursor = (query.get("page") or [None])[0] or encode_cursor(start, 0)
        else:
            cursor = encode_cursor(days[position[0]], position[1]) if position else None
        body = {"data": data, "has_more": cursor is not None, "next_page": cursor}
        return 200, ({"object": "page"} | body) if provider == "openai" else body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "provider-apis-replay"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo print what matters themselves."""

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None
    ):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        replay: ProviderApiServer = self.server.replay  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        provider = PATHS.get(url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        status, body, headers, content_type = self._answer(replay, provider, query)
        replay._record(RecordedRequest(provider or "unknown", url.path, query, status))
        self._send(status, body, content_type, headers)

    def _answer(
        self, replay: ProviderApiServer, provider: str | None, query: dict
    ) -> tuple[int, bytes, dict, str]:
        if provider is None:
            return (
                404,
                json.dumps(error_body("openai", "not_found_error", "unknown path")).encode(),
                {},
                "application/json",
            )
        fault = replay._next_fault(provider)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            kind = "rate_limit_error" if fault.status == 429 else "api_error"
            body = (
                fault.body
                if fault.body is not None
                else json.dumps(error_body(provider, kind, "injected")).encode()
            )
            return fault.status, body, headers, fault.content_type
        if provider == "openai":
            authorized = self.headers.get("Authorization") == f"Bearer {replay.keys['openai']}"
        else:
            authorized = self.headers.get("x-api-key") == replay.keys["anthropic"]
            if authorized and not self.headers.get("anthropic-version"):
                message = "anthropic-version: header is required"
                return (
                    400,
                    json.dumps(error_body(provider, "invalid_request_error", message)).encode(),
                    {},
                    "application/json",
                )
        if not authorized:
            message = "Incorrect API key provided." if provider == "openai" else "invalid x-api-key"
            return (
                401,
                json.dumps(error_body(provider, "authentication_error", message)).encode(),
                {},
                "application/json",
            )
        status, body = replay.page(provider, query)
        return status, json.dumps(body).encode(), {}, "application/json"

    def _refuse(self) -> None:
        self._send(
            405, json.dumps(error_body("openai", "invalid_request_error", "method not allowed")).encode()
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse
