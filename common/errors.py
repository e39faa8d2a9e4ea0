"""One exception root. Terminal errors are never retried; transient ones are (Pub/Sub redelivers).

Every error knows the HTTP status and short machine code it maps to, so handlers stay thin.
"""

from __future__ import annotations

from typing import Any


class ConvergenceError(Exception):
    """Root of every error Convergence raises on purpose."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class TerminalError(ConvergenceError):
    """Retrying cannot help: bad input, bad configuration, a failed check."""


class TransientError(ConvergenceError):
    """A dependency hiccup: retry with backoff."""

    status = 503
    code = "dependency_unavailable"
    retryable = True


class ConfigurationError(TerminalError):
    code = "configuration_error"


class BadRequest(TerminalError):
    status = 400
    code = "bad_request"


class ValidationFailed(TerminalError):
    status = 422
    code = "validation_error"


class Unauthorized(TerminalError):
    status = 401
    code = "unauthorized"


class Forbidden(TerminalError):
    status = 403
    code = "forbidden"


class NotFound(TerminalError):
    status = 404
    code = "not_found"


class MethodNotAllowed(TerminalError):
    status = 405
    code = "method_not_allowed"


class Conflict(TerminalError):
    status = 409
    code = "conflict"


class PayloadTooLarge(TerminalError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(TerminalError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(TerminalError):
    status = 429
    code = "rate_limited"


class DependencyUnavailable(TransientError):
    """A backing service (warehouse, bus, keyring) is down or overloaded."""


class StepFailed(TerminalError):
    """A pipeline step failed for a reason retrying cannot fix (e.g. a data-quality check)."""

    status = 422
    code = "step_failed"
