"""HTTP entry points: a request handler per function group, and a WSGI app for `convergence serve`."""

from __future__ import annotations

from collections.abc import Callable

import flask

from common.api.http import build_map, dispatch
from common.api.routes import routes_for
from common.runtime import Runtime

GROUPS = ("onboard", "trigger", "both")


def http_handler(group: str, runtime: Callable[[], Runtime]) -> Callable[[flask.Request], flask.Response]:
    """The handler of one function: onboard routes, trigger routes, or both, on the runtime `runtime()` gives."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}")
    routes = routes_for(group)
    url_map = build_map(routes)

    def handle(request: flask.Request) -> flask.Response:
        return dispatch(request, routes, url_map, runtime)

    return handle


def create_wsgi_app(group: str, runtime: Callable[[], Runtime]) -> flask.Flask:
    """A Flask app that sends every path and method to the route table (errors stay JSON)."""
    handle = http_handler(group, runtime)
    app = flask.Flask("convergence")
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

    def entry(path: str = "") -> flask.Response:
        return handle(flask.request)

    app.add_url_rule("/", "root", entry, methods=methods)
    app.add_url_rule("/<path:path>", "entry", entry, methods=methods)
    return app
