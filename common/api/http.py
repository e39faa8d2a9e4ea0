"""Request plumbing: match a route, authenticate, parse the query and body, map every error to a JSON answer.

Nothing here knows a use case: handlers in routes.py call services; this module turns their results and
errors into responses. A caller never sees HTML or a stack trace, whatever they send. A `Route` declares the
models of what it takes and answers; query strings are parsed with them here, for every route alike.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import flask
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound
from werkzeug.routing import Map, Rule

from common.contracts.base import QueryParameters, parse_query_string
from common.contracts.errors import ApiError
from common.errors import (
    BadRequest,
    ConvergenceError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TerminalError,
    Unauthorized,
    ValidationFailed,
)
from common.runtime import Runtime
from common.services import auth, auth_throttle, rate_limits

log = logging.getLogger(__name__)

Auth = Literal["none", "root", "tenant", "root_or_tenant"]
Group = Literal["onboard", "trigger", "both"]  # the function serving a route; `both` = every function
Handler = Callable[..., tuple[int, Any]]
QueryParser = Callable[[Iterable[tuple[str, list[str]]]], BaseModel]
JSON = "application/json"
METHOD_NOT_ALLOWED = 405
RATE_LIMITED = 429  # answered to a tenant over its read or write limit (common.services.rate_limits)  # answered by the plumbing on every path, for a method the path does not have


@dataclass(frozen=True, eq=False)
class Route:
    """One operation of the API: who may call it, what it takes, and what it answers for each status.

    These declarations are the contract: /openapi.json is generated from them, the plumbing parses query
    strings and JSON bodies with them, and tests/e2e/test_api_contract.py checks every answer against them.
    Every error status answers `ApiError`. Equality is identity, so a route table can key a cache.
    """

    method: str
    path: str
    handler: Handler
    auth: Auth
    group: Group
    summary: str
    responses: Mapping[int, type[BaseModel]]  # success status → the model of its JSON answer
    errors: tuple[int, ...] = ()
    error_descriptions: Mapping[int, str] = field(default_factory=dict)  # beyond the status's usual meaning
    body: type[BaseModel] | None = None  # the JSON body
    # A non-JSON body instead: Content-Type → its OpenAPI format (string or binary).
    raw_body: Mapping[str, str] | None = None
    query: type[QueryParameters] | None = None
    # Replaces the plumbing's parse for a query with rules beyond its model (defaults across fields).
    query_parser: QueryParser | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # optional request headers → what they do
    # The media type of the success answers: JSON, or a page (its model a RootModel[str] of the text).
    media_type: str = "application/json"

    def __post_init__(self) -> None:
        where = f"{self.method} {self.path}"
        if not self.responses or not all(200 <= status < 300 for status in self.responses):
            raise ValueError(f"{where}: responses must map each success status (2xx) to its answer model")
        if not all(400 <= status < 600 for status in self.errors):
            raise ValueError(f"{where}: errors must be 4xx or 5xx statuses")
        if not set(self.error_descriptions) <= set(self.errors):
            raise ValueError(f"{where}: error_descriptions names a status not in errors")
        if self.body is not None and self.raw_body is not None:
            raise ValueError(f"{where}: a route takes a JSON body or a raw body, not both")
        if self.query_parser is not None and self.query is None:
            raise ValueError(f"{where}: a query_parser needs the query model it parses into")

    @property
    def rate_limited(self) -> bool:
        """Whether a tenant's key reaches it: then each call counts against the tenant's read or write limit."""
        return self.auth in ("tenant", "root_or_tenant")

    @property
    def error_statuses(self) -> tuple[int, ...]:
        """Every error status the route may answer, the plumbing's 405 (and 429 where rate-limited) included."""
        limited = {RATE_LIMITED} if self.rate_limited else set()
        return tuple(sorted({*self.errors, METHOD_NOT_ALLOWED, *limited}))

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every status the route may answer: its successes, then its errors."""
        return (*sorted(self.responses), *self.error_statuses)

    def answer_model(self, status: int) -> type[BaseModel]:
        """The model of the JSON answer with `status`: the success's own, or ApiError for an error status."""
        if status in self.responses:
            return self.responses[status]
        if status in self.error_statuses:
            return ApiError
        raise KeyError(f"{self.method} {self.path} does not declare status {status}")

    def parse_query(self, args: Any) -> BaseModel | None:
        """The query string (a werkzeug MultiDict) as the route's query model; None when it declares none."""
        if self.query is None:
            return None
        if self.query_parser is not None:
            return self.query_parser(args.lists())
        return parse_query_string(self.query, args.lists())


@dataclass
class RequestContext:
    """What a handler gets: the runtime, the request, its route and parsed query, and who is calling."""

    request: flask.Request
    runtime_provider: Callable[[], Runtime]
    route: Route
    routes: Sequence[Route]  # the route table serving this request (what /openapi.json describes)
    org: str | None = None
    is_root: bool = False
    query: Any = None  # the route's query model, parsed before the handler runs

    @property
    def runtime(self) -> Runtime:
        """The instance's adapters, built on first use (so /health answers even before)."""
        return self.runtime_provider()

    def body(self) -> Any:
        """The JSON body validated by the model the route declares for it."""
        return self.json(self.route.body)

    def json(self, model: type[BaseModel] | None = None) -> Any:
        """The JSON body (size-limited, must be an object), validated by `model` when given."""
        raw = read_body(self.request, self.runtime.settings.max_json_bytes)
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise BadRequest("the request body is not valid JSON", code="invalid_json") from None
        else:
            body = {}
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", code="invalid_body")
        if model is None:
            return body
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise ValidationFailed(
                "the request body is not valid: "
                + "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
                ),
                errors=[
                    {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in exc.errors(include_input=False, include_url=False)
                ],
            ) from None


def read_body(request: flask.Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without reading it all."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
    return data


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):  # an answer model (e.g. a run): its fields, then encoded as below
        return value.model_dump()
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> flask.Response:
    """`body` as JSON (dates ISO 8601, decimals as numbers), never cached or sniffed."""
    response = flask.Response(json.dumps(body, default=_default), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: ConvergenceError) -> flask.Response:
    """The ApiError answer of `error`, with Allow or Retry-After when its status has one."""
    headers = {}
    if error.status == 405 and "allowed" in error.details:
        headers["Allow"] = ", ".join(error.details["allowed"])
    if error.status in (429, 503) and "retry_after" in error.details:
        headers["Retry-After"] = str(error.details["retry_after"])
    return json_response(error.status, error.to_body(), headers)


def build_map(routes: Sequence[Route]) -> Map:
    """A werkzeug URL map whose endpoints are the routes' indexes in `routes`."""
    return Map(
        [Rule(r.path, endpoint=i, methods=[r.method]) for i, r in enumerate(routes)], strict_slashes=False
    )


def _authenticate_throttled(ctx: RequestContext, route: Route, org_in_path: str | None) -> None:
    """Authenticate, unless this client failed too often this minute (`common.services.auth_throttle`)."""
    if route.auth == "none":
        return
    client = auth_throttle.client_of(
        ctx.request.headers, ctx.request.remote_addr,
        behind_front_end=ctx.runtime.warehouse.name == "bigquery",
    )  # fmt: skip
    auth_throttle.refuse_if_throttled(ctx.runtime, client)
    try:
        _authenticate(ctx, route, org_in_path)
    except Unauthorized as exc:
        if exc.code not in auth_throttle.NOT_A_GUESS:
            auth_throttle.record_failure(ctx.runtime, client)
        raise


def _authenticate(ctx: RequestContext, route: Route, org_in_path: str | None) -> None:
    headers = ctx.request.headers
    if route.auth == "none":
        return
    if route.auth == "root":
        auth.require_root(ctx.runtime, headers.get("X-CA-Root-Key"))
        ctx.is_root = True
        return
    if route.auth == "root_or_tenant" and headers.get("X-CA-Root-Key") is not None:
        auth.require_root(ctx.runtime, headers.get("X-CA-Root-Key"))
        ctx.is_root = True
        return
    ctx.org = auth.require_tenant(ctx.runtime, headers.get("X-API-Key"), org_in_path)


def dispatch(
    request: flask.Request, routes: Sequence[Route], url_map: Map, runtime: Callable[[], Runtime]
) -> flask.Response:
    """Serve one request against a route table."""
    adapter = url_map.bind_to_environ(request.environ)
    try:
        try:
            index, args = adapter.match(request.path, method=request.method)
        except WzNotFound:
            raise NotFound(f"no route {request.method} {request.path}", code="route_not_found") from None
        except WzMethodNotAllowed as exc:
            allowed = sorted(exc.valid_methods or [])
            raise MethodNotAllowed(f"{request.method} is not allowed here", allowed=allowed) from None
        route = routes[index]
        ctx = RequestContext(request=request, runtime_provider=runtime, route=route, routes=routes)
        _authenticate_throttled(ctx, route, args.get("org"))
        limited = route.rate_limited and ctx.org is not None and not ctx.is_root
        kind = rate_limits.kind_of(request.method)
        with rate_limits.counted(ctx.runtime, ctx.org, kind) if limited else nullcontext():  # type: ignore[arg-type]
            ctx.query = route.parse_query(request.args)
            status, body = route.handler(ctx, **args)
        if route.media_type != JSON and status in route.responses:
            return flask.Response(body, status=status, mimetype=route.media_type)
        return json_response(status, body)
    except ConvergenceError as exc:
        if exc.status == 500:  # the platform's fault (e.g. a tenant keyset that no longer decrypts)
            incident = uuid.uuid4().hex
            log.error(
                "incident %s: %s %s → %s %s", incident, request.method, request.path, exc.code, exc.message
            )
            body = {"error": exc.code, "message": f"{exc.message} (incident {incident}, logged)",
                    "incident_id": incident}  # fmt: skip
            return json_response(500, body)
        if not isinstance(exc, TerminalError) or exc.status >= 500:
            log.warning("%s %s → %s %s", request.method, request.path, exc.status, exc.message)
        return error_response(exc)
    except Exception:
        incident = uuid.uuid4().hex
        log.exception("incident %s: unhandled error on %s %s", incident, request.method, request.path)
        return json_response(500, {
            "error": "internal_error", "message": f"an internal error occurred (incident {incident}, logged)",
            "incident_id": incident,
        })  # fmt: skip
