"""Request plumbing: match a route, authenticate, parse the body, map every error to a JSON answer.

Nothing here knows a use case: handlers in routes.py call services; this module turns their results and
errors into responses. A caller never sees HTML or a stack trace, whatever they send.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import flask
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import MethodNotAllowed as WzMethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound
from werkzeug.routing import Map, Rule

from common.errors import (
    BadRequest,
    ConvergenceError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TerminalError,
    ValidationFailed,
)
from common.runtime import Runtime
from common.services import auth, rate_limits

log = logging.getLogger(__name__)


@dataclass
class RequestContext:
    """What a handler gets: the runtime, the request, and who is calling."""

    request: flask.Request
    runtime_provider: Callable[[], Runtime]
    org: str | None = None
    is_root: bool = False

    @property
    def runtime(self) -> Runtime:
        """The instance's adapters, built on first use (so /health answers even before)."""
        return self.runtime_provider()

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
                + "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()),
                errors=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                        for e in exc.errors(include_input=False, include_url=False)],
            ) from None


Handler = Callable[..., tuple[int, Any]]


@dataclass
class Route:
    """One operation of the API; also the source of its OpenAPI description."""

    method: str
    path: str
    handler: Handler
    auth: str  # none | root | tenant | root_or_tenant
    group: str  # onboard | trigger | both
    summary: str
    status: int = 200
    request_model: type[BaseModel] | None = None
    request_content: dict[str, str] | None = None
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    response_example: dict[str, Any] | None = None
    rate_limited: bool = False  # counted against the tenant's RATE_LIMIT_PER_MINUTE once authenticated


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
    response = flask.Response(json.dumps(body, default=_default), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: ConvergenceError) -> flask.Response:
    headers = {}
    if error.status == 405 and "allowed" in error.details:
        headers["Allow"] = ", ".join(error.details["allowed"])
    if error.status in (429, 503) and "retry_after" in error.details:
        headers["Retry-After"] = str(error.details["retry_after"])
    return json_response(error.status, error.to_body(), headers)


def build_map(routes: list[Route]) -> Map:
    return Map([Rule(r.path, endpoint=i, methods=[r.method]) for i, r in enumerate(routes)], strict_slashes=False)


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
    request: flask.Request, routes: list[Route], url_map: Map, runtime: Callable[[], Runtime]
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
        ctx = RequestContext(request=request, runtime_provider=runtime)
        _authenticate(ctx, route, args.get("org"))
        limited = route.rate_limited and ctx.org is not None
        with rate_limits.counted(ctx.runtime, ctx.org) if limited else nullcontext():  # type: ignore[arg-type]
            status, body = route.handler(ctx, **args)
        return json_response(status, body)
    except ConvergenceError as exc:
        if not isinstance(exc, TerminalError) or exc.status >= 500:
            log.warning("%s %s → %s %s", request.method, request.path, exc.status, exc.message)
        return error_response(exc)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(500, {"error": "internal_error", "message": "an internal error occurred; it was logged"})
