"""OpenAI and Anthropic cost loaders: the providers' quirks, pagination, retries and refusals.

Requests go over real HTTP to the local replay server (convergence/demo/provider_apis.py); only the pause between
retries is recorded instead of slept, so the backoff policy can be checked without waiting for it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from common.errors import TerminalError, TransientError
from common.providers.anthropic import costs_api as anthropic_costs
from common.providers.openai import costs_api as openai_costs
from common.settings import Settings
from common.sources.cost_window import CostFetch, CostWindow
from common.sources.provider_http import MAX_WAIT_SECONDS, ProviderApi
from convergence.demo.provider_apis import Fault, ProviderApiServer

DAY = dt.date(2025, 8, 1)
WINDOW = CostWindow.for_day(DAY)
START = int(WINDOW.start.timestamp())
BACKOFF = 0.5


@pytest.fixture
def server() -> Iterator[ProviderApiServer]:
    with ProviderApiServer(seed=7) as running:
        yield running


@pytest.fixture
def settings(server: ProviderApiServer) -> Settings:
    return Settings(
        openai_api_base=server.base_url,
        anthropic_api_base=server.base_url,
        http_max_attempts=4,
        http_backoff_seconds=BACKOFF,
    )


class Pauses(list):
    """Records each pause the client asks for instead of sleeping through it."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def openai_client(settings: Settings, key: str, pauses: list | None = None) -> ProviderApi:
    return openai_costs.openai_api(settings, key, sleep=pauses if pauses is not None else Pauses())


def anthropic_client(settings: Settings, key: str, pauses: list | None = None) -> ProviderApi:
    return anthropic_costs.anthropic_api(settings, key, sleep=pauses if pauses is not None else Pauses())


def openai_page(*results: dict[str, Any], start: int = START) -> dict[str, Any]:
    bucket = {"object": "bucket", "start_time": start, "end_time": start + 86400, "results": list(results)}
    return {"object": "page", "data": [bucket], "has_more": False, "next_page": None}


def openai_result(
    value: Any, project: str | None = "proj_a", line_item: str | None = "gpt-4o, input"
) -> dict:
    return {
        "object": "organization.costs.result",
        "amount": {"value": value, "currency": "usd"},
        "line_item": line_item,
        "project_id": project,
    }


def anthropic_page(*results: dict[str, Any]) -> dict[str, Any]:
    bucket = {
        "starting_at": "2025-08-01T00:00:00Z",
        "ending_at": "2025-08-02T00:00:00Z",
        "results": list(results),
    }
    return {"data": [bucket], "has_more": False, "next_page": None}


def parse_openai(page: dict[str, Any]) -> CostFetch:
    fetch = CostFetch()
    openai_costs.parse_page(page, WINDOW, fetch, organization_id=None)
    return fetch


def parse_anthropic(page: dict[str, Any]) -> CostFetch:
    fetch = CostFetch()
    anthropic_costs.parse_page(page, WINDOW, fetch)
    return fetch


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the providers' quirks -----------------------------------------------------------------------------
def test_openai_dollars_as_string_or_number_are_stored_as_delivered_and_summed_exactly():
    fetch = parse_openai(
        openai_page(openai_result("0.06"), openai_result(0.1), openai_result(3), openai_result(1.234e-05))
    )

    assert [row["amount_value"] for row in fetch.rows] == ["0.06", "0.1", "3", "0.00001234"]
    assert fetch.totals == {"USD": Decimal("3.16001234")}
    assert {row["currency"] for row in fetch.rows} == {"usd"}
    assert fetch.rows[0]["bucket_start"] == WINDOW.start and fetch.rows[0]["bucket_end"] == WINDOW.end


def test_openai_null_project_and_line_item_are_loaded_as_nulls():
    fetch = parse_openai(openai_page(openai_result("1.5", project=None, line_item=None)))

    assert fetch.rows[0]["project_id"] is None and fetch.rows[0]["line_item"] is None
    assert fetch.totals == {"USD": Decimal("1.5")}


def test_anthropic_amount_is_kept_in_cents_and_totalled_in_dollars():
    result = {"currency": "USD", "amount": "123.4567", "workspace_id": "wrkspc_01", "cost_type": "tokens",
              "description": "Claude Sonnet 4 Usage - Input Tokens", "model": "claude-sonnet-4-20250514",
              "service_tier": "standard", "context_window": "0-200k", "token_type": "uncached_input_tokens"}  # fmt: skip
    fetch = parse_anthropic(anthropic_page(result, result | {"amount": "0.0033"}))

    assert [row["amount"] for row in fetch.rows] == ["123.4567", "0.0033"]
    assert fetch.totals == {"USD": Decimal("1.2346")}
    assert fetch.rows[0]["model"] == "claude-sonnet-4-20250514"


def test_anthropic_default_workspace_and_absent_fields_are_nulls():
    fetch = parse_anthropic(anthropic_page({"currency": "USD", "amount": "50", "workspace_id": None,
                                            "cost_type": "web_search", "description": "Web Search Usage"}))  # fmt: skip

    row = fetch.rows[0]
    assert row["workspace_id"] is None and row["cost_type"] == "web_search"
    assert row["model"] is None and row["token_type"] is None and row["inference_geo"] is None
    assert fetch.totals == {"USD": Decimal("0.5")}


def test_result_without_an_amount_is_terminal_naming_what_is_missing():
    page = openai_page({"object": "organization.costs.result", "line_item": None, "project_id": None})

    with pytest.raises(TerminalError, match="result 0 has no 'amount'") as caught:
        parse_openai(page)
    assert caught.value.code == "provider_bad_response"


def test_anthropic_result_without_currency_is_terminal_naming_it():
    with pytest.raises(TerminalError, match="has no 'currency'"):
        parse_anthropic(anthropic_page({"amount": "12.5", "workspace_id": None}))


def test_amount_that_is_not_a_number_is_terminal():
    with pytest.raises(TerminalError, match="amount.value 'twelve' is not a decimal number"):
        parse_openai(openai_page(openai_result("twelve")))


def test_bucket_outside_the_requested_day_is_not_loaded():
    fetch = parse_openai(openai_page(openai_result("9.99"), start=START + 86400))

    assert fetch.rows == [] and fetch.buckets_outside_window == 1


# -- pagination ----------------------------------------------------------------------------------------
def test_pages_are_followed_until_has_more_is_false(settings):
    with ProviderApiServer(seed=7, results_per_page=4) as paged:
        local = settings.model_copy(update={"openai_api_base": paged.base_url})
        with openai_client(local, paged.keys["openai"]) as api:
            fetch = openai_costs.fetch_costs(api, WINDOW)

        expected_rows = paged.expected_rows("openai", DAY)
        assert len(fetch.rows) == expected_rows
        assert fetch.totals == {"USD": paged.expected_total("openai", DAY)}
        requests = paged.requests_to("openai")
        assert fetch.stats.pages == len(requests) == -(-expected_rows // 4) > 1
        assert "page" not in requests[0].query
        assert all(len(r.query["page"]) == 1 for r in requests[1:])


def test_window_longer_than_the_bucket_limit_spans_pages(server, settings):
    window = CostWindow(WINDOW.start, WINDOW.start + dt.timedelta(days=40))
    with anthropic_client(settings, server.keys["anthropic"]) as api:
        fetch = anthropic_costs.fetch_costs(api, window)

    days = [DAY + dt.timedelta(days=i) for i in range(40)]
    assert fetch.stats.pages == 2  # the API returns at most 31 daily buckets per page
    assert len(fetch.rows) == sum(server.expected_rows("anthropic", d) for d in days)
    assert fetch.totals == {"USD": sum(server.expected_total("anthropic", d) for d in days)}
    assert [r.query["limit"] for r in server.requests_to("anthropic")] == [["31"], ["31"]]


def test_cursor_the_provider_already_returned_is_terminal(server, settings):
    server.loop_cursor("openai")
    with openai_client(settings, server.keys["openai"]) as api, pytest.raises(TerminalError) as caught:
        openai_costs.fetch_costs(api, WINDOW)

    assert caught.value.code == "provider_pagination_loop"
    assert len(server.requests_to("openai")) == 2


# -- retries -------------------------------------------------------------------------------------------
def test_rate_limit_is_retried_no_sooner_than_retry_after(server, settings):
    server.inject("anthropic", Fault(429, retry_after="7"), times=2)
    pauses = Pauses()
    with anthropic_client(settings, server.keys["anthropic"], pauses) as api:
        fetch = anthropic_costs.fetch_costs(api, WINDOW)

    assert len(pauses) == 2 and all(7 <= p <= 7 + BACKOFF for p in pauses)
    assert (fetch.stats.requests, fetch.stats.retries, fetch.stats.pages) == (3, 2, 1)
    assert fetch.totals == {"USD": server.expected_total("anthropic", DAY)}


def test_retry_after_beyond_the_cap_waits_only_the_cap(server, settings):
    server.inject("openai", Fault(429, retry_after="3600"))
    pauses = Pauses()
    with openai_client(settings, server.keys["openai"], pauses) as api:
        openai_costs.fetch_costs(api, WINDOW)

    assert pauses == [MAX_WAIT_SECONDS]


def test_server_errors_are_retried_with_growing_backoff(server, settings):
    server.inject("openai", Fault(500), times=1)
    server.inject("openai", Fault(503), times=2)
    pauses = Pauses()
    with openai_client(settings, server.keys["openai"], pauses) as api:
        fetch = openai_costs.fetch_costs(api, WINDOW)

    assert len(pauses) == 3
    for attempt, pause in enumerate(pauses):
        assert BACKOFF * 2**attempt / 2 <= pause <= BACKOFF * 2**attempt
    assert fetch.stats.retries == 3 and len(fetch.rows) == server.expected_rows("openai", DAY)


def test_provider_failing_every_attempt_is_transient_so_the_step_is_redelivered(server, settings):
    server.inject("openai", Fault(503), times=settings.http_max_attempts)
    with openai_client(settings, server.keys["openai"]) as api, pytest.raises(TransientError) as caught:
        openai_costs.fetch_costs(api, WINDOW)

    assert caught.value.retryable and caught.value.code == "provider_unavailable"
    assert f"after {settings.http_max_attempts} attempts: HTTP 503" in caught.value.message
    assert len(server.requests_to("openai")) == settings.http_max_attempts


def test_unreachable_provider_is_transient_after_the_attempts(settings):
    local = settings.model_copy(update={"anthropic_api_base": f"http://127.0.0.1:{closed_port()}"})
    pauses = Pauses()
    with (
        anthropic_client(local, "sk-ant-admin01-" + "a" * 24, pauses) as api,
        pytest.raises(TransientError) as e,
    ):
        anthropic_costs.fetch_costs(api, WINDOW)

    assert "could not reach 127.0.0.1" in e.value.message
    assert len(pauses) == local.http_max_attempts - 1


# -- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_refused_key_is_terminal_and_never_printed(server, settings, provider):
    wrong = "sk-admin-" + "Z" * 24 if provider == "openai" else "sk-ant-admin01-" + "Z" * 24
    make, fetch = {"openai": (openai_client, openai_costs.fetch_costs),
                   "anthropic": (anthropic_client, anthropic_costs.fetch_costs)}[provider]  # fmt: skip
    with make(settings, wrong) as api, pytest.raises(TerminalError) as caught:
        fetch(api, WINDOW)

    assert caught.value.code == "provider_auth_failed"
    assert "refused the organization's admin key (HTTP 401)" in caught.value.message
    assert wrong not in caught.value.message and "Z" * 8 not in caught.value.message
    assert len(server.requests_to(provider)) == 1  # no retry of a refused key


def test_other_client_error_is_terminal_with_the_providers_message_minus_the_key(server, settings):
    key = server.keys["openai"]
    body = json.dumps(
        {"error": {"message": f"Invalid group_by for key {key}", "type": "invalid_request_error"}}
    )
    server.inject("openai", Fault(400, body=body.encode()))
    with openai_client(settings, key) as api, pytest.raises(TerminalError) as caught:
        openai_costs.fetch_costs(api, WINDOW)

    assert caught.value.code == "provider_request_rejected"
    assert "rejected the request (HTTP 400): Invalid group_by for key [redacted]" in caught.value.message
    assert key not in caught.value.message


def test_long_provider_message_is_truncated(server, settings):
    body = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": "x" * 5000}})
    server.inject("anthropic", Fault(422, body=body.encode()))
    with anthropic_client(settings, server.keys["anthropic"]) as api, pytest.raises(TerminalError) as caught:
        anthropic_costs.fetch_costs(api, WINDOW)

    assert len(caught.value.message) < 400 and caught.value.message.endswith("…")


def test_body_that_is_not_json_is_terminal(server, settings):
    server.inject("openai", Fault(200, body=b"<html>maintenance</html>", content_type="text/html"))
    with openai_client(settings, server.keys["openai"]) as api, pytest.raises(TerminalError) as caught:
        openai_costs.fetch_costs(api, WINDOW)

    assert caught.value.code == "provider_bad_response" and "not JSON (text/html)" in caught.value.message


def test_page_without_has_more_is_terminal_naming_it(server, settings):
    server.inject("anthropic", Fault(200, body=json.dumps({"data": []}).encode()))
    with anthropic_client(settings, server.keys["anthropic"]) as api, pytest.raises(TerminalError) as caught:
        anthropic_costs.fetch_costs(api, WINDOW)

    assert "has no 'has_more'" in caught.value.message


def test_requests_carry_the_documented_window_and_grouping(server, settings):
    with anthropic_client(settings, server.keys["anthropic"]) as api:
        anthropic_costs.fetch_costs(api, WINDOW)
    with openai_client(settings, server.keys["openai"]) as api:
        openai_costs.fetch_costs(api, WINDOW)

    (anthropic,) = server.requests_to("anthropic")
    assert anthropic.path == "/v1/organizations/cost_report"
    assert anthropic.query["starting_at"] == ["2025-08-01T00:00:00Z"]
    assert anthropic.query["ending_at"] == ["2025-08-02T00:00:00Z"]
    assert anthropic.query["group_by[]"] == ["workspace_id", "description"]
    (openai,) = server.requests_to("openai")
    assert openai.path == "/v1/organization/costs"
    assert openai.query["start_time"] == [str(START)] and openai.query["end_time"] == [str(START + 86400)]
    assert openai.query["group_by"] == ["project_id", "line_item"] and openai.query["bucket_width"] == ["1d"]


# -- the replay server itself --------------------------------------------------------------------------
def test_replay_without_group_by_answers_one_result_per_day_holding_the_days_total(server):
    query = {"start_time": START, "end_time": START + 2 * 86400}
    headers = {"Authorization": f"Bearer {server.keys['openai']}"}
    body = httpx.get(f"{server.base_url}/v1/organization/costs", params=query, headers=headers).json()

    assert [len(bucket["results"]) for bucket in body["data"]] == [1, 1]
    for bucket, day in zip(body["data"], (DAY, DAY + dt.timedelta(days=1)), strict=True):
        (result,) = bucket["results"]
        assert result["project_id"] is None and result["line_item"] is None
        assert Decimal(result["amount"]["value"]) == server.expected_total("openai", day)
    assert body["has_more"] is False and body["next_page"] is None


def test_replay_refuses_a_limit_above_the_documented_maximum(server):
    headers = {"x-api-key": server.keys["anthropic"], "anthropic-version": "2023-06-01"}
    query = {"starting_at": "2025-08-01T00:00:00Z", "limit": 32}
    response = httpx.get(f"{server.base_url}/v1/organizations/cost_report", params=query, headers=headers)

    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "limit must be between 1 and 31",
    }
