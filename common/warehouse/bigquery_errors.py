"""google-cloud-bigquery's errors as the platform's: NotFound, BadRequest, transient (retry) or terminal."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from common.errors import (
    BadRequest,
    ConfigurationError,
    Conflict,
    ConvergenceError,
    DependencyUnavailable,
    NotFound,
)
from common.warehouse.bigquery_params import QueryFailed

_TRANSIENT_REASONS = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "quotaExceeded", "jobRateLimitExceeded"}
)
_TRANSIENT_ERRORS = (
    gexc.ServerError,
    gexc.TooManyRequests,
    gexc.RetryError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    auth_exceptions.TransportError,
    FutureTimeout,
)
CLIENT_ERRORS = (gexc.GoogleAPICallError, requests.exceptions.RequestException, auth_exceptions.GoogleAuthError,
                  *_TRANSIENT_ERRORS)  # fmt: skip


def _reason(exc: gexc.GoogleAPICallError) -> str:
    for error in exc.errors or ():
        if isinstance(error, Mapping) and error.get("reason"):
            return str(error["reason"])
    return ""


def translate(exc: BaseException, *, data_error: bool = False) -> ConvergenceError:
    """A google-cloud error as the platform's: NotFound, BadRequest, transient, or terminal otherwise."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if isinstance(exc, _TRANSIENT_ERRORS):
        return DependencyUnavailable(f"BigQuery unavailable: {first}")
    if isinstance(exc, auth_exceptions.GoogleAuthError):
        return ConfigurationError(f"no usable Google credentials for BigQuery: {first}")
    if not isinstance(exc, gexc.GoogleAPICallError):
        return QueryFailed(f"BigQuery call failed: {first}")
    reason = _reason(exc)
    if reason in _TRANSIENT_REASONS or "concurrent update" in first or "Could not serialize access" in first:
        return DependencyUnavailable(f"BigQuery busy: {first}")
    if isinstance(exc, gexc.NotFound) or (isinstance(exc, gexc.Forbidden) and "does not exist" in first):
        # A query on a dataset that does not exist is a 403 accessDenied "... or perhaps it does not exist"
        # (for other projects in BigQuery, for every project in bqemulator).
        return NotFound(f"not found in the warehouse: {first}")
    if isinstance(exc, gexc.Forbidden):
        return ConfigurationError(f"BigQuery refused access: {first}")
    if isinstance(exc, gexc.Conflict):
        return Conflict(f"BigQuery conflict: {first}")
    if data_error and isinstance(exc, gexc.BadRequest):
        return BadRequest(f"data does not fit the table: {first}", code="schema_mismatch")
    return QueryFailed(f"warehouse rejected the statement: {first}")
