"""The seeded cost data the provider API replay serves: what OpenAI and Anthropic would bill, day by day.

A few projects (OpenAI) and workspaces (Anthropic, one of them null), current models and line items, and
plausible daily amounts, all drawn from a `random.Random` seeded with (seed, provider, day): the same seed
gives the same costs on every run and machine, and a day's costs do not depend on which other days were
asked for. Each result is rendered in the provider's own shape with its quirks -- OpenAI dollars sometimes
as strings and sometimes as numbers, Anthropic amounts as decimal strings in cents, null projects,
workspaces and line items -- so loaders meet what the real APIs send.

Kept apart from the HTTP server (provider_apis.py) and the query and page rules (provider_api_protocol.py)
so the data can be read, and its expected totals computed, without any of the serving.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

Provider = str  # "openai" | "anthropic"
PROVIDERS = ("openai", "anthropic")

OPENAI_PROJECTS = ("proj_Xq7LmN2cRt4YbV8k", "proj_K9dWx3VbP1sEjH6a", "proj_Zf5gTn8JqA2uLw0e")
# (line item, typical daily dollars low, high)
OPENAI_LINE_ITEMS = (
    ("gpt-4o-2024-08-06, input", 0.5, 40.0), ("gpt-4o-2024-08-06, output", 1.0, 90.0),
    ("gpt-4o-mini-2024-07-18, input", 0.01, 3.0), ("gpt-4o-mini-2024-07-18, output", 0.02, 6.0),
    ("o3-2025-04-16, input", 0.5, 30.0), ("o3-2025-04-16, output", 1.0, 70.0),
    ("text-embedding-3-small", 0.001, 1.5), ("gpt-4o-2024-08-06, cached input", 0.05, 5.0),
    ("web search tool calls", 0.1, 8.0), ("whisper-1", 0.05, 4.0),
)  # fmt: skip
ANTHROPIC_WORKSPACES = ("wrkspc_01JpL3Zq8VnMx4RkT7sYbW2c", "wrkspc_01HcN5Fd2QwEr9UyK1mPzA6t", None)
ANTHROPIC_MODELS = (
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", 1.0),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", 4.0),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", 0.25),
)
ANTHROPIC_TOKENS = (
    ("uncached_input_tokens", "Input Tokens", 1.0), ("output_tokens", "Output Tokens", 4.0),
    ("cache_read_input_tokens", "Input Tokens, Cache Hit", 0.1),
    ("cache_creation.ephemeral_5m_input_tokens", "Input Tokens, Cache Write (5m)", 1.25),
)  # fmt: skip
ANTHROPIC_TOOLS = (("web_search", "Web Search Usage"), ("code_execution", "Code Execution Usage"),
                   ("session_usage", "Managed Agents Session Usage"))  # fmt: skip


def _amount(rng: random.Random, low: float, high: float) -> Decimal:
    places = rng.choice((2, 4, 6, 8))
    return round(Decimal(str(rng.uniform(low, high))), places)


def openai_day(seed: int, day: dt.date) -> list[dict[str, Any]]:
    """One day's OpenAI cost results, grouped by project and line item, as `organization.costs.result`s."""
    rng = random.Random(f"{seed}:openai:{day.isoformat()}")
    results = []
    for project in OPENAI_PROJECTS:
        for line_item, low, high in rng.sample(OPENAI_LINE_ITEMS, rng.randint(3, 7)):
            results.append((project, line_item, _amount(rng, low, high)))
    if rng.random() < 0.5:  # costs no project owns, and a line item the API could not name
        results.append((None, "fine-tuning training", _amount(rng, 1.0, 25.0)))
        results.append((rng.choice(OPENAI_PROJECTS), None, _amount(rng, 0.001, 0.5)))
    rendered = []
    for project, line_item, amount in results:
        # The API sends amount.value as a JSON number or as a decimal string; keep both in the replay.
        value: Any = str(amount) if rng.random() < 0.4 else float(amount)
        rendered.append(
            {"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
             "line_item": line_item, "project_id": project}
        )  # fmt: skip
    return rendered


def anthropic_day(seed: int, day: dt.date) -> list[dict[str, Any]]:
    """One day's Anthropic cost report results, grouped by workspace and description."""
    rng = random.Random(f"{seed}:anthropic:{day.isoformat()}")
    results = []
    for workspace in ANTHROPIC_WORKSPACES:
        for model, name, weight in rng.sample(ANTHROPIC_MODELS, rng.randint(1, 3)):
            tier = rng.choice(("standard", "standard", "batch"))
            window = "200k-1M" if model.startswith("claude-sonnet-4") and rng.random() < 0.3 else "0-200k"
            for token_type, label, factor in ANTHROPIC_TOKENS:
                cents = _amount(rng, 5.0 * weight * factor, 4000.0 * weight * factor)
                results.append(
                    {"workspace_id": workspace, "description": f"{name} Usage - {label}", "cost_type": "tokens",
                     "model": model, "service_tier": tier, "context_window": window, "token_type": token_type,
                     "amount": cents}
                )  # fmt: skip
        for cost_type, description in rng.sample(ANTHROPIC_TOOLS, rng.randint(0, 2)):
            results.append(
                {"workspace_id": workspace, "description": description, "cost_type": cost_type, "model": None,
                 "service_tier": None, "context_window": None, "token_type": None,
                 "amount": _amount(rng, 1.0, 900.0)}
            )  # fmt: skip
    # Amounts are decimal strings in cents ("123.4567" is $1.234567); inference_geo is null unless grouped by.
    return [{"currency": "USD", **r, "amount": str(r["amount"]), "inference_geo": None} for r in results]


def day_costs(seed: int, provider: Provider, day: dt.date) -> list[dict[str, Any]]:
    """The results of one day's bucket for `provider`, grouped by both dimensions, exactly as served."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}")
    return openai_day(seed, day) if provider == "openai" else anthropic_day(seed, day)


def dollars(provider: Provider, result: dict[str, Any]) -> Decimal:
    """The amount of one result in dollars, exact (OpenAI sends dollars, Anthropic cents)."""
    if provider == "openai":
        value = result["amount"]["value"]
        return Decimal(value if isinstance(value, str) else repr(value))
    return Decimal(result["amount"]) / 100
