"""Failed authentication is throttled per client (CONTRACT §2): after FAILED_AUTH_PER_MINUTE wrong keys in a
minute one client (address and key prefix) gets 429 with Retry-After, even for a right key, until the minute
ends; other addresses and other organisations' keys are not affected. On BigQuery the failures counted by
several instances add up (shared through org_rate_windows)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from common.contracts.onboarding import BootstrapRequest
from common.crypto.api_keys import generate_api_key
from common.runtime import Runtime
from common.services import auth_throttle, onboarding
from common.services.rate_limits import RateLimiter, WarehouseWindows
from common.settings import get_settings, reset_settings
from common.wiring import build_runtime, set_runtime
from tests.e2e.support import Clock

RUNS = "/api/v1/pipelines/runs"
_hops = itertools.cycle(range(1, 250))  # a different forwarded address on every request
LIMIT = auth_throttle.FAILED_AUTH_PER_MINUTE


@pytest.fixture
def clock(runtime: Runtime) -> Clock:
    """The failed-authentication counter on a clock the test moves (15 s into a minute)."""
    at = Clock(1_800_000_015.0)
    runtime.caches[auth_throttle.CACHE_KEY] = RateLimiter(LIMIT, kind="auth", now=at)
    return at


def get(client: Any, key: str, address: str) -> Any:
    # Embedded mode: the peer's address counts; an X-Forwarded-For the client sends does not move it.
    spoofed = {"X-Forwarded-For": f"203.0.113.{next(_hops)}"}
    return client.get(RUNS, headers={"X-API-Key": key} | spoofed, environ_base={"REMOTE_ADDR": address})


def test_a_client_guessing_keys_is_refused_with_429_even_for_the_right_key_until_the_minute_ends(
    trigger_client: Any, two_tenants: dict[str, dict[str, str]], clock: Clock
) -> None:
    acme, globex = two_tenants["acme"]["X-API-Key"], two_tenants["globex"]["X-API-Key"]
    guesses = [get(trigger_client, generate_api_key("acme"), "198.51.100.7") for _ in range(LIMIT)]
    assert [g.status_code for g in guesses] == [401] * LIMIT

    refused = get(trigger_client, generate_api_key("acme"), "198.51.100.7")
    right_key = get(trigger_client, acme, "198.51.100.7")

    for answer in (refused, right_key):
        assert answer.status_code == 429
        assert answer.json["error"] == "too_many_failed_authentications"
        assert answer.headers["Retry-After"] == "45"
    assert get(trigger_client, acme, "198.51.100.8").status_code == 200  # another address
    assert get(trigger_client, generate_api_key("acme"), "198.51.100.8").status_code == 401
    assert get(trigger_client, globex, "198.51.100.7").status_code == 200  # another organisation's key
    clock.now += 45
    assert get(trigger_client, acme, "198.51.100.7").status_code == 200  # a new minute


def test_right_keys_and_another_organisations_key_never_count_as_failures(
    trigger_client: Any, two_tenants: dict[str, dict[str, str]], clock: Clock
) -> None:
    acme, globex = two_tenants["acme"]["X-API-Key"], two_tenants["globex"]["X-API-Key"]
    for _ in range(LIMIT * 3):
        assert get(trigger_client, acme, "198.51.100.7").status_code == 200
        other = trigger_client.get(
            "/api/v1/pipelines/status/acme/no-such-run",
            headers={"X-API-Key": globex},
            environ_base={"REMOTE_ADDR": "198.51.100.7"},
        )
        assert other.status_code == 403  # a valid key of another organisation: no guess
    assert get(trigger_client, acme, "198.51.100.7").status_code == 200


@pytest.fixture
def bigquery_runtime(runtime: Runtime, bigquery_emulator: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The platform on bqemulator (a project of its own, bootstrapped), in place of the embedded one."""
    monkeypatch.setenv("CONVERGENCE_WAREHOUSE", "bigquery")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator)
    monkeypatch.setenv("GCP_PROJECT_ID", f"auth-{uuid.uuid4().hex[:10]}")
    reset_settings()
    runtime.close()
    rt = build_runtime(get_settings())
    set_runtime(rt)
    onboarding.bootstrap(rt, BootstrapRequest())
    return rt


def test_on_bigquery_two_instances_share_a_clients_failures(bigquery_runtime: Runtime) -> None:
    rt = bigquery_runtime
    clock = Clock(1_800_000_015.0)
    first, second = (
        RateLimiter(LIMIT, kind="auth", now=clock, store=WarehouseWindows(rt), run_sync=lambda work: work())
        for _ in range(2)
    )
    # Behind Google's front end the address is the last X-Forwarded-For entry, whatever the client put first.
    guesser = auth_throttle.client_of(
        {"X-API-Key": generate_api_key("acme"), "X-Forwarded-For": "203.0.113.1, 198.51.100.7"}, "10.0.0.1"
    )
    assert guesser == auth_throttle.client_of(
        {"X-API-Key": generate_api_key("acme"), "X-Forwarded-For": "203.0.113.2, 198.51.100.7"}, "10.0.0.2"
    )
    other = auth_throttle.client_of({"X-API-Key": generate_api_key("acme")}, "198.51.100.8")
    for instance, failures in ((first, 6), (second, 4)):
        rt.caches[auth_throttle.CACHE_KEY] = instance
        for _ in range(failures):
            auth_throttle.refuse_if_throttled(rt, guesser)
            auth_throttle.record_failure(rt, guesser)
    first.sync()
    second.sync()
    first.sync()  # each has read what the other appended

    for instance in (first, second):  # each saw only some failures itself; together they are the limit
        rt.caches[auth_throttle.CACHE_KEY] = instance
        with pytest.raises(auth_throttle.TooManyFailedAuthentications) as refused:
            auth_throttle.refuse_if_throttled(rt, guesser)
        assert refused.value.status == 429 and refused.value.details["retry_after"] == 45
        auth_throttle.refuse_if_throttled(rt, other)  # another address is not affected
