"""How the two cost APIs read a list request and shape its answer, as the provider API replay implements it.

OpenAI `GET /v1/organization/costs` and Anthropic `GET /v1/organizations/cost_report` differ in parameter
names (start_time/end_time in Unix seconds against starting_at/ending_at in RFC 3339, group_by against
group_by[]), in their `limit` ceilings, bucket shapes and error bodies, but page the same way: daily
buckets from the start of the window, `limit` buckets a page, and an opaque `next_page` cursor. This module
holds those rules -- query validation, group-by aggregation, bucket rendering, cursors, error bodies -- as
pure functions, apart from the HTTP server (provider_apis.py) and the seeded data (provider_cost_data.py),
so what a page contains can be read without the serving around it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

from convergence.demo.provider_cost_data import Provider, dollars

PATHS = {"/v1/organization/costs": "openai", "/v1/organizations/cost_report": "anthropic"}
MAX_LIMIT = {"openai": 180, "anthropic": 31}
GROUPS = {"openai": ("project_id", "line_item"), "anthropic": ("workspace_id", "description")}
DESCRIBED = ("description", "cost_type", "model", "service_tier", "context_window", "token_type")
DAY = dt.timedelta(days=1)
UTC = dt.UTC


def parse_query(provider: Provider, query: dict[str, list[str]]) -> tuple[dt.date, dt.date, int, tuple]:
    """(first day, day after the last, limit, group-by) of a list request; ValueError as the API refuses."""
    first = {k: v[0] for k, v in query.items() if v}
    if first.get("bucket_width", "1d") != "1d":
        raise ValueError("bucket_width must be 1d")
    if provider == "openai":
        if "start_time" not in first:
            raise ValueError("start_time is required")
        start = dt.datetime.fromtimestamp(int(first["start_time"]), UTC)
        end = dt.datetime.fromtimestamp(int(first["end_time"]), UTC) if "end_time" in first else None
        groups = tuple(query.get("group_by", []))
    else:
        if "starting_at" not in first:
            raise ValueError("starting_at is required")
        start = _rfc3339(first["starting_at"])
        end = _rfc3339(first["ending_at"]) if "ending_at" in first else None
        groups = tuple(query.get("group_by[]", []))
    unknown = set(groups) - set(GROUPS[provider])
    if unknown:
        raise ValueError(f"group_by does not support {', '.join(sorted(unknown))}")
    limit = int(first.get("limit", "7"))
    if not 1 <= limit <= MAX_LIMIT[provider]:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT[provider]}")
    first_day = start.date()  # buckets are snapped to the start of the UTC day
    last_day = (end - dt.timedelta(microseconds=1)).date() + DAY if end else first_day + limit * DAY
    if last_day <= first_day:
        raise ValueError("the end of the window must come after its start")
    return first_day, last_day, limit, groups


def _rfc3339(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def grouped(provider: Provider, results: list[dict[str, Any]], groups: tuple) -> list[dict[str, Any]]:
    """Results as the API groups them: fields of a dimension not grouped by are null and amounts summed."""
    if set(groups) == set(GROUPS[provider]):
        return results
    blanked: dict[str, tuple] = {"project_id": ("project_id",), "line_item": ("line_item",),
                                 "workspace_id": ("workspace_id",), "description": DESCRIBED}  # fmt: skip
    hidden = [name for group in GROUPS[provider] if group not in groups for name in blanked[group]]
    merged: dict[str, dict[str, Any]] = {}
    for result in results:
        row = result | {name: None for name in hidden}
        key = json.dumps({k: v for k, v in row.items() if k != "amount"}, sort_keys=True)
        total = merged[key]["_sum"] if key in merged else Decimal(0)
        merged[key] = row | {"_sum": total + dollars(provider, result)}
    out = []
    for row in merged.values():
        total = row.pop("_sum")
        if provider == "openai":
            out.append(row | {"amount": {"value": str(total), "currency": row["amount"]["currency"]}})
        else:
            out.append(row | {"amount": str(total * 100)})
    return out


def bucket(provider: Provider, day: dt.date, results: list[dict[str, Any]]) -> dict[str, Any]:
    """One day's bucket in the provider's shape."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=UTC)
    if provider == "openai":
        return {"object": "bucket", "start_time": int(start.timestamp()),
                "end_time": int((start + DAY).timestamp()), "results": results}  # fmt: skip
    return {"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "ending_at": (start + DAY).strftime("%Y-%m-%dT%H:%M:%SZ"), "results": results}  # fmt: skip


def encode_cursor(day: dt.date, offset: int) -> str:
    """The `next_page` cursor of the page that starts at result `offset` of `day`'s bucket."""
    raw = json.dumps({"day": day.isoformat(), "offset": offset}).encode()
    return "page_" + base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str | None, first_day: dt.date) -> tuple[int, int]:
    """(bucket index in the window, result offset in that bucket) of a cursor; no cursor is the start."""
    if cursor is None:
        return 0, 0
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.removeprefix("page_").encode()))
        day, offset = dt.date.fromisoformat(state["day"]), int(state["offset"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("page is not a cursor this API returned") from None
    if day < first_day or offset < 0:
        raise ValueError("page does not belong to this query")
    return (day - first_day).days, offset


def error_body(provider: Provider, kind: str, message: str) -> dict[str, Any]:
    """The provider's error body: OpenAI {"error": {...}}, Anthropic {"type": "error", "error": {...}}."""
    if provider == "openai":
        code = "invalid_api_key" if kind == "authentication_error" else None
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return {"type": "error", "error": {"type": kind, "message": message}}
