"""Local stand-in for the OpenAI organization costs API and the Anthropic cost report API.

No real provider is reachable here, so this server replays the documented response shapes of
`GET /v1/organization/costs` and `GET /v1/organizations/cost_report` from seeded, deterministic data: a few
projects and workspaces, current models and line items, plausible daily amounts. It keeps the providers'
quirks (OpenAI dollars sometimes as strings, sometimes as numbers; Anthropic amounts as decimal strings in
cents; null projects, workspaces and descriptions), honours the query window, `limit` (buckets per page),
group-by and page cursors, checks the admin key, and can inject faults (429 with Retry-After, 5xx, broken
bodies, a cursor that repeats). Tests and `convergence demo` point the loaders at it through
OPENAI_API_BASE / ANTHROPIC_API_BASE and compare what was loaded with `expected_total`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import secrets
import string
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

Provider = str  # "openai" | "anthropic"
PROVIDERS = ("openai", "anthropic")
PATHS = {"/v1/organization/costs": "openai", "/v1/organizations/cost_report": "anthropic"}
MAX_LIMIT = {"openai": 180, "anthropic": 31}
GROUPS = {"openai": ("project_id", "line_item"), "anthropic": ("workspace_id", "description")}
DESCRIBED = ("description", "cost_type", "model", "service_tier", "context_window", "token_type")
DAY = dt.timedelta(days=1)
UTC = dt.UTC

OPENAI_PROJECTS = ("proj_Xq7LmN2cRt4YbV8k", "proj_K9dWx3VbP1sEjH6a", "proj_Zf5gTn8JqA2uLw0e")
# (line item, typical daily dollars low, high)
OPENAI_LINE_ITEMS = (
    ("gpt-4o-2024-08-06, input", 0.5, 40.0), ("gpt-4o-2024-08-06, output", 1.0, 90.0),
    ("gpt-4o-mini-2024-07-18, input", 0.01, 3.0), ("gpt-4o-mini-2024-07-18, output", 0.02, 6.0),
    ("o3-2025-04-16, input", 0.5, 30.0), ("o3-2025-04-16, output", 1.0, 70.0),
    ("text-embedding-3-small", 0.001, 1.5), ("gpt-4o-2024-08-06, cached input", 0.05, 5.0),
    ("web search tool calls", 0.1, 8.0), ("whisper-1", 0.05, 4.0),
)  # fmt: skip
ANTHROPIC_WORKSPACES = ("wrkspc_01JpL3Zq8VnMx4RkT7sYbW2c", "wrkspc_01HcN5Fd2QwEr9UyK1mPzA6t", None)
ANTHROPIC_MODELS = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", 1.0),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", 4.0),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", 0.25),
)
ANTHROPIC_TOKENS = (
    ("uncached_input_tokens", "Input Tokens", 1.0), ("output_tokens", "Output Tokens", 4.0),
    ("cache_read_input_tokens", "Input Tokens, Cache Hit", 0.1),
    ("cache_creation.ephemeral_5m_input_tokens", "Input Tokens, Cache Write (5m)", 1.25),
)  # fmt: skip
ANTHROPIC_TOOLS = (("web_search", "Web Search Usage"), ("code_execution", "Code Execution Usage"),
                   ("session_usage", "Managed Agents Session Usage"))  # fmt: skip


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


def _amount(rng: random.Random, low: float, high: float) -> Decimal:
    places = rng.choice((2, 4, 6, 8))
    return round(Decimal(str(rng.uniform(low, high))), places)


def _openai_day(seed: int, day: dt.date) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:openai:{day.isoformat()}")
    results = []
    for project in OPENAI_PROJECTS:
        for line_item, low, high in rng.sample(OPENAI_LINE_ITEMS, rng.randint(3, 7)):
            results.append((project, line_item, _amount(rng, low, high)))
    if rng.random() < 0.5:  # costs no project owns, and a line item the API could not name
        results.append((None, "fine-tuning training", _amount(rng, 1.0, 25.0)))
        results.append((rng.choice(OPENAI_PROJECTS), None, _amount(rng, 0.001, 0.5)))
    rendered = []
    for project, line_item, amount in results:
        # The API sends amount.value as a JSON number or as a decimal string; keep both in the replay.
        value: Any = str(amount) if rng.random() < 0.4 else float(amount)
        rendered.append(
            {"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
             "line_item": line_item, "project_id": project}
        )  # fmt: skip
    return rendered


def _anthropic_day(seed: int, day: dt.date) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:anthropic:{day.isoformat()}")
    results = []
    for workspace in ANTHROPIC_WORKSPACES:
        for model, name, weight in rng.sample(ANTHROPIC_MODELS, rng.randint(1, 3)):
            tier = rng.choice(("standard", "standard", "batch"))
            window = "200k-1M" if model.startswith("claude-sonnet-4") and rng.random() < 0.3 else "0-200k"
            for token_type, label, factor in ANTHROPIC_TOKENS:
                cents = _amount(rng, 5.0 * weight * factor, 4000.0 * weight * factor)
                results.append(
                    {"workspace_id": workspace, "description": f"{name} Usage - {label}", "cost_type": "tokens",
                     "model": model, "service_tier": tier, "context_window": window, "token_type": token_type,
                     "amount": cents}
                )  # fmt: skip
        for cost_type, description in rng.sample(ANTHROPIC_TOOLS, rng.randint(0, 2)):
            results.append(
                {"workspace_id": workspace, "description": description, "cost_type": cost_type, "model": None,
                 "service_tier": None, "context_window": None, "token_type": None,
                 "amount": _amount(rng, 1.0, 900.0)}
            )  # fmt: skip
    # Amounts are decimal strings in cents ("123.4567" is $1.234567); inference_geo is null unless grouped by.
    return [{"currency": "USD", **r, "amount": str(r["amount"]), "inference_geo": None} for r in results]


def _dollars(provider: Provider, result: dict[str, Any]) -> Decimal:
    if provider == "openai":
        value = result["amount"]["value"]
        return Decimal(value if isinstance(value, str) else repr(value))
    return Decimal(result["amount"]) / 100


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
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {PROVIDERS}")
        return _openai_day(self.seed, day) if provider == "openai" else _anthropic_day(self.seed, day)

    def expected_total(self, provider: Provider, day: dt.date) -> Decimal:
        """The day's total in dollars, exact."""
        return sum((_dollars(provider, r) for r in self.costs(provider, day)), Decimal(0))

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
            start, end, limit, groups = _parse_query(provider, query)
            bucket_index, offset = _decode_cursor(query.get("page", [None])[0], start)
        except (ValueError, OverflowError, OSError) as exc:
            return 400, _error(provider, "invalid_request_error", str(exc))
        days = [start + dt.timedelta(days=i) for i in range((end - start).days)]
        data: list[dict[str, Any]] = []
        room = self.results_per_page  # results this page may still hold; None: whole buckets only
        position = None  # (bucket index, result offset) where the next page starts
        for index in range(bucket_index, len(days)):
            if len(data) == limit or room == 0:
                position = (index, 0)
                break
            results = _grouped(provider, self.costs(provider, days[index]), groups)[offset:]
            if room is not None and len(results) > room:
                data.append(_bucket(provider, days[index], results[:room]))
                position = (index, offset + room)
                break
            data.append(_bucket(provider, days[index], results))
            room = None if room is None else room - len(results)
            offset = 0
        if provider in self._looping_cursor:
            cursor = (query.get("page") or [None])[0] or _encode_cursor(start, 0)
        else:
            cursor = _encode_cursor(days[position[0]], position[1]) if position else None
        body = {"data": data, "has_more": cursor is not None, "next_page": cursor}
        return 200, ({"object": "page"} | body) if provider == "openai" else body


def _parse_query(provider: Provider, query: dict[str, list[str]]) -> tuple[dt.date, dt.date, int, tuple]:
    first = {k: v[0] for k, v in query.items() if v}
    if first.get("bucket_width", "1d") != "1d":
        raise ValueError("bucket_width must be 1d")
    if provider == "openai":
        if "start_time" not in first:
            raise ValueError("start_time is required")
        start = dt.datetime.fromtimestamp(int(first["start_time"]), UTC)
        end = dt.datetime.fromtimestamp(int(first["end_time"]), UTC) if "end_time" in first else None
        groups = tuple(query.get("group_by", []))
    else:
        if "starting_at" not in first:
            raise ValueError("starting_at is required")
        start = _rfc3339(first["starting_at"])
        end = _rfc3339(first["ending_at"]) if "ending_at" in first else None
        groups = tuple(query.get("group_by[]", []))
    unknown = set(groups) - set(GROUPS[provider])
    if unknown:
        raise ValueError(f"group_by does not support {', '.join(sorted(unknown))}")
    limit = int(first.get("limit", "7"))
    if not 1 <= limit <= MAX_LIMIT[provider]:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT[provider]}")
    first_day = start.date()  # buckets are snapped to the start of the UTC day
    last_day = (end - dt.timedelta(microseconds=1)).date() + DAY if end else first_day + limit * DAY
    if last_day <= first_day:
        raise ValueError("the end of the window must come after its start")
    return first_day, last_day, limit, groups


def _rfc3339(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _grouped(provider: Provider, results: list[dict[str, Any]], groups: tuple) -> list[dict[str, Any]]:
    """Results as the API groups them: fields of a dimension not grouped by are null and amounts summed."""
    if set(groups) == set(GROUPS[provider]):
        return results
    blanked: dict[str, tuple] = {"project_id": ("project_id",), "line_item": ("line_item",),
                                 "workspace_id": ("workspace_id",), "description": DESCRIBED}  # fmt: skip
    hidden = [name for group in GROUPS[provider] if group not in groups for name in blanked[group]]
    merged: dict[str, dict[str, Any]] = {}
    for result in results:
        row = result | {name: None for name in hidden}
        key = json.dumps({k: v for k, v in row.items() if k != "amount"}, sort_keys=True)
        total = merged[key]["_sum"] if key in merged else Decimal(0)
        merged[key] = row | {"_sum": total + _dollars(provider, result)}
    out = []
    for row in merged.values():
        total = row.pop("_sum")
        if provider == "openai":
            out.append(row | {"amount": {"value": str(total), "currency": row["amount"]["currency"]}})
        else:
            out.append(row | {"amount": str(total * 100)})
    return out


def _bucket(provider: Provider, day: dt.date, results: list[dict[str, Any]]) -> dict[str, Any]:
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    if provider == "openai":
        return {"object": "bucket", "start_time": int(start.timestamp()),
                "end_time": int((start + DAY).timestamp()), "results": results}  # fmt: skip
    return {"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (start + DAY).strftime("%Y-%m-%dT%H:%M:%SZ"), "results": results}  # fmt: skip


def _encode_cursor(day: dt.date, offset: int) -> str:
    raw = json.dumps({"day": day.isoformat(), "offset": offset}).encode()
    return "page_" + base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str | None, first_day: dt.date) -> tuple[int, int]:
    """(bucket index in the window, result offset in that bucket) of a cursor; no cursor is the start."""
    if cursor is None:
        return 0, 0
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.removeprefix("page_").encode()))
        day, offset = dt.date.fromisoformat(state["day"]), int(state["offset"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("page is not a cursor this API returned") from None
    if day < first_day or offset < 0:
        raise ValueError("page does not belong to this query")
    return (day - first_day).days, offset


def _error(provider: Provider, kind: str, message: str) -> dict[str, Any]:
    """The provider's error body: OpenAI {"error": {...}}, Anthropic {"type": "error", "error": {...}}."""
    if provider == "openai":
        code = "invalid_api_key" if kind == "authentication_error" else None
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return {"type": "error", "error": {"type": kind, "message": message}}


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
                json.dumps(_error("openai", "not_found_error", "unknown path")).encode(),
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
                else json.dumps(_error(provider, kind, "injected")).encode()
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
                    json.dumps(_error(provider, "invalid_request_error", message)).encode(),
                    {},
                    "application/json",
                )
        if not authorized:
            message = "Incorrect API key provided." if provider == "openai" else "invalid x-api-key"
            return (
                401,
                json.dumps(_error(provider, "authentication_error", message)).encode(),
                {},
                "application/json",
            )
        status, body = replay.page(provider, query)
        return status, json.dumps(body).encode(), {}, "application/json"

    def _refuse(self) -> None:
        self._send(405, json.dumps(_error("openai", "invalid_request_error", "method not allowed")).encode())

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse
