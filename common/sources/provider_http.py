"""Provider admin APIs over HTTPS: one request with retries, cursor pagination, and errors that decide retry.

Rate limits (429), server errors (5xx) and transport failures are retried with capped, jittered exponential
backoff (a `Retry-After` in seconds is honoured, up to the cap); when attempts run out the error is transient
so Pub/Sub redelivers the step later. A refused key, another 4xx or a malformed answer is terminal: retrying
the same request cannot help. The secret travels only in request headers; messages never contain it.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Self

import httpx

from common.errors import TerminalError, TransientError
from common.settings import Settings

MAX_WAIT_SECONDS = 30.0  # longest single pause between attempts, whatever Retry-After asks for
MAX_PAGES = 1000  # a day of costs never needs this many pages; more means a provider bug
RETRYABLE_STATUSES = frozenset({408, 429})  # plus every 5xx
MESSAGE_LIMIT = 300  # characters of a provider's error message kept in ours
_KEY_LIKE = re.compile(r"\b(sk|key)-[A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)

QueryParams = Sequence[tuple[str, str | int]]


class ProviderAuthFailed(TerminalError):
    """The provider refused the tenant's key (401/403)."""

    code = "provider_auth_failed"


class ProviderRejected(TerminalError):
    """The provider refused the request itself (a 4xx other than auth and rate limits)."""

    code = "provider_request_rejected"


class ProviderBadResponse(TerminalError):
    """The provider answered with something that is not the documented shape."""

    code = "provider_bad_response"


class ProviderUnavailable(TransientError):
    """The provider kept failing or rate limiting: the step is retried later."""

    code = "provider_unavailable"


@dataclass
class RequestStats:
    """What fetching cost: successful pages, HTTP requests sent, and retries among them."""

    pages: int = 0
    requests: int = 0
    retries: int = 0


def required(obj: Any, key: str, where: str) -> Any:
    """obj[key] of a JSON object, or a terminal error naming the missing field and where it was expected."""
    if not isinstance(obj, Mapping):
        raise ProviderBadResponse(f"{where} is not a JSON object")
    if key not in obj or obj[key] is None:
        raise ProviderBadResponse(f"{where} has no {key!r}")
    return obj[key]


class ProviderApi:
    """A provider's admin API: base URL, auth headers and the retry policy, over one httpx client."""

    def __init__(
        self,
        label: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        secret: str,
        timeout: float,
        max_attempts: int,
        backoff: float,
        max_wait: float = MAX_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
        key_hint: str = "",
    ) -> None:
        self.label = label
        self.stats = RequestStats()
        self._secret = secret
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._max_wait = max_wait
        self._sleep = sleep
        self._key_hint = key_hint
        self._random = random.Random()
        # No redirects: following one could carry the key's header to another host.
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=dict(headers), timeout=timeout, follow_redirects=False
        )

    @classmethod
    def from_settings(
        cls,
        label: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        secret: str,
        settings: Settings,
        **options: Any,
    ) -> ProviderApi:
        """A client with the timeout and retry policy of the settings."""
        return cls(
            label, base_url, headers, secret=secret, timeout=settings.http_timeout_seconds,
            max_attempts=settings.http_max_attempts, backoff=settings.http_backoff_seconds, **options,
        )  # fmt: skip

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- one request -----------------------------------------------------------------------------------
    def get_json(self, path: str, params: QueryParams) -> dict[str, Any]:
        """GET path with params; the decoded JSON object, after retrying what a retry can fix."""
        last_problem = ""
        for attempt in range(1, self._max_attempts + 1):
            if attempt > 1:
                self.stats.retries += 1
            self.stats.requests += 1
            retry_after: float | None = None
            try:
                response = self._client.get(path, params=list(params))
            except httpx.TransportError as exc:
                last_problem = f"could not reach {self._host()} ({type(exc).__name__})"
            else:
                status = response.status_code
                if status in RETRYABLE_STATUSES or status >= 500:
                    last_problem = f"HTTP {status}" + (" (rate limited)" if status == 429 else "")
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                else:
                    return self._decoded(response)
            if attempt < self._max_attempts:
                self._sleep(self._wait(attempt, retry_after))
        raise ProviderUnavailable(
            f"{self.label} still failing after {self._max_attempts} attempts: {last_problem}; the step will be retried"
        )

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to pause before attempt+1: Retry-After when given, else jittered exponential backoff."""
        if retry_after is not None:
            # Never earlier than asked; a little jitter on top keeps parallel steps from retrying in lockstep.
            return min(self._max_wait, retry_after + self._random.uniform(0, self._backoff / 4))
        exponential = min(self._max_wait, self._backoff * 2 ** (attempt - 1))
        return exponential / 2 + self._random.uniform(0, exponential / 2)

    def _decoded(self, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status in (401, 403):
            detail = self._provider_message(response)
            raise ProviderAuthFailed(
                f"{self.label} refused the organization's admin key (HTTP {status})"
                + (f": {detail}" if detail else "")
                + (f"; {self._key_hint}" if self._key_hint else "")
            )
        if 300 <= status < 400:
            raise ProviderRejected(f"{self.label} answered with an unexpected redirect (HTTP {status})")
        if status >= 400:
            detail = self._provider_message(response) or "no error message"
            raise ProviderRejected(f"{self.label} rejected the request (HTTP {status}): {detail}")
        try:
            body = response.json()
        except ValueError:
            raise ProviderBadResponse(
                f"{self.label} answered HTTP {status} with a body that is not JSON"
                f" ({response.headers.get('Content-Type', 'no content type')})"
            ) from None
        if not isinstance(body, dict):
            raise ProviderBadResponse(f"{self.label} answered with JSON that is not an object")
        return body

    def _provider_message(self, response: httpx.Response) -> str:
        """The provider's own error message (OpenAI and Anthropic both use error.message), made safe to show."""
        try:
            body = response.json()
        except ValueError:
            return ""
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if not isinstance(message, str):
            return ""
        return self.redact(message)

    def redact(self, text: str) -> str:
        """text without the secret or anything shaped like a key, on one line, truncated."""
        if self._secret:
            text = text.replace(self._secret, "[redacted]")
        text = " ".join(_KEY_LIKE.sub("[redacted]", text).split())
        return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"

    def _host(self) -> str:
        return self._client.base_url.host or "the provider"

    # -- pagination ------------------------------------------------------------------------------------
    def pages(
        self, path: str, params: QueryParams, *, cursor_param: str = "page"
    ) -> Iterator[dict[str, Any]]:
        """Every page of a cursor-paginated list, following next_page while has_more is true."""
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            query = list(params) + ([(cursor_param, cursor)] if cursor is not None else [])
            page = self.get_json(path, query)
            self.stats.pages += 1
            has_more = required(page, "has_more", f"{self.label} page {self.stats.pages}")
            if not isinstance(has_more, bool):
                raise ProviderBadResponse(
                    f"{self.label} page {self.stats.pages}: has_more is not true or false"
                )
            yield page
            if not has_more:
                return
            cursor = page.get("next_page")
            if not isinstance(cursor, str) or not cursor:
                raise ProviderBadResponse(
                    f"{self.label} page {self.stats.pages} has more data but no next_page"
                )
            if cursor in seen:
                raise ProviderBadResponse(
                    f"{self.label} returned a next_page cursor it had already returned (page {self.stats.pages});"
                    " stopping instead of looping",
                    code="provider_pagination_loop",
                )
            if self.stats.pages >= MAX_PAGES:
                raise ProviderBadResponse(f"{self.label} returned more than {MAX_PAGES} pages for one window")
            seen.add(cursor)


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if not math.isnan(seconds) else None
