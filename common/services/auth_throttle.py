"""Failed authentication is throttled per client (CONTRACT §2): key guessing is refused, not answered.

A client is the address the request came from and the key it presents, by prefix: the organisation part of a
tenant key (`{org}_api_...`), `root` for the root key, `none` without a key. The address is, on BigQuery
deployments (Cloud Functions), the last entry of X-Forwarded-For (the one Google's front end appends: what
a client sends before it cannot move it); in embedded mode the peer's address (a header there is the
client's own word). After FAILED_AUTH_PER_MINUTE failed authentications (401) of one client in a UTC minute,
its requests are refused with 429 `too_many_failed_authentications` and Retry-After until the minute ends —
before its key is looked at, so a right guess cannot be told from a wrong one while it is refused. Other
addresses, and the same address presenting another organisation's key, are not affected; a request without a
key, or with a valid key of another organisation (403), is no guess and does not count.

Counting uses the rate limiter's fixed windows (`common.services.rate_limits`): one process counts exactly;
on BigQuery the failures are shared across instances through `org_rate_windows` (keys `auth:<client>`),
bounded as the write limit is: N instances refuse at the latest after N x the limit in one minute.
"""

from __future__ import annotations

from collections.abc import Mapping

from common.errors import RateLimited
from common.runtime import Runtime
from common.services import rate_limits

FAILED_AUTH_PER_MINUTE = 10
CACHE_KEY = f"{rate_limits.CACHE_KEY}:auth"
NOT_A_GUESS = frozenset({"missing_api_key", "missing_root_key"})  # no key sent: nothing guessed
_PREFIX_LIMIT = 50  # an organisation id is at most 50 characters


class TooManyFailedAuthentications(RateLimited):
    """This client failed to authenticate too often this minute."""

    code = "too_many_failed_authentications"


def client_of(headers: Mapping[str, str], remote_addr: str | None, *, behind_front_end: bool = True) -> str:
    """Who is authenticating: `auth:<address>|<key prefix>`, from the request's headers and peer address.

    `behind_front_end`: the request came through Google's front end (Cloud Functions), whose entry is the
    last of X-Forwarded-For; elsewhere (the embedded server) the header is the client's own and is ignored.
    """
    forwarded = [hop.strip() for hop in (headers.get("X-Forwarded-For") or "").split(",") if hop.strip()]
    address = forwarded[-1] if forwarded and behind_front_end else (remote_addr or "unknown")
    key = headers.get("X-API-Key")
    if headers.get("X-CA-Root-Key") is not None:
        prefix = "root"
    elif not key:
        prefix = "none"
    elif "_api_" in key:
        prefix = key.split("_api_", 1)[0][:_PREFIX_LIMIT]
    else:
        prefix = "other"
    return f"auth:{address[:64]}|{prefix}"


def limiter_for(rt: Runtime) -> rate_limits.RateLimiter:
    """This instance's counter of failed authentications (shared through the warehouse on BigQuery)."""
    return rate_limits.cached_limiter(
        rt,
        "auth",
        lambda: rate_limits.RateLimiter(
            FAILED_AUTH_PER_MINUTE, kind="auth", store=rate_limits.shared_store(rt)
        ),
    )


def refuse_if_throttled(rt: Runtime, client: str) -> None:
    """429 when `client` used up its failed authentications of this minute."""
    limiter = limiter_for(rt)
    if limiter.used(client) >= limiter.limit:
        retry_after = limiter.seconds_left_in_window()
        raise TooManyFailedAuthentications(
            f"too many failed authentications from this client; try again in {retry_after} s",
            retry_after=retry_after, limit="failed_authentications_per_minute", limit_value=limiter.limit,
        )  # fmt: skip


def record_failure(rt: Runtime, client: str) -> None:
    """Count one failed authentication of `client`."""
    try:
        limiter_for(rt).check(client)
    except RateLimited:  # the limit is reached: the next request is refused by refuse_if_throttled
        pass
