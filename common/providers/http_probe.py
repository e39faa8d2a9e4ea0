"""One authenticated GET to a provider's HTTPS API, as the read-only check of an API key.

The request is the one a provider's step makes, for one day: if it answers, the key works for what the
platform will do with it. One attempt, no retries, no redirects (following one could carry the key's header
to another host), bounded by the check's timeout. What the answer means:

- 2xx with a JSON object: ACTIVE.
- 401 or 403: INVALID, with the provider's own message, redacted.
- a timeout, a transport failure, 408, 429, 5xx: UNVERIFIED (the provider could not be asked; later may do).
- a redirect, a 404 or another 4xx, or 2xx with something else than JSON: UNVERIFIED, naming the setting of
  the API's address; the key was not refused, the platform's request or address was.

Messages are built from the status, the exception's type and the provider's message after `redact`: never
from an exception's text or the request, which carry URLs and headers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from common.providers.base import Verification, VerificationRequest, proved, refused, unverified


def probe_api_key(
    request: VerificationRequest,
    *,
    label: str,
    base_url: str,
    base_setting: str,
    path: str,
    params: Sequence[tuple[str, str | int]],
    headers: Mapping[str, str],
) -> Verification:
    """GET base_url + path once with the key's headers; what the answer says about the key."""
    host = httpx.URL(base_url).host or base_url
    try:
        with httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=request.timeout,
            follow_redirects=False,
        ) as client:
            response = client.get(path, params=list(params))
    except httpx.TimeoutException:
        return unverified(f"{label} at {host} did not answer within {request.timeout:g} s")
    except httpx.TransportError as exc:
        return unverified(f"could not reach {label} at {host} ({type(exc).__name__})")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return unverified(f"could not ask {label} at {host} ({type(exc).__name__}); check {base_setting}")
    status = response.status_code
    detail = _provider_message(request, response)
    said = f": {detail}" if detail else ""
    if 200 <= status < 300:
        if _is_json_object(response):
            return proved(f"{label} accepted the key (GET {path} answered HTTP {status})")
        return unverified(
            f"{label} answered HTTP {status} with something other than a JSON object; is {base_setting} the"
            " provider's API?"
        )
    if status in (401, 403):
        return refused(f"{label} refused the key (HTTP {status}){said}")
    if status in (408, 429) or status >= 500:
        busy = " (rate limited)" if status == 429 else ""
        return unverified(f"{label} is unavailable (HTTP {status}{busy}){said}")
    if 300 <= status < 400:
        return unverified(
            f"{label} answered with a redirect (HTTP {status}), not followed; check {base_setting}"
        )
    return unverified(f"{label} did not take the check request (HTTP {status}){said}; check {base_setting}")


def _is_json_object(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _provider_message(request: VerificationRequest, response: httpx.Response) -> str:
    """The provider's error message (OpenAI and Anthropic both answer error.message), redacted."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return request.redact(message) if isinstance(message, str) else ""
