"""Helpers the HTTP end-to-end suites share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.runtime import Runtime
from common.settings import get_settings, reset_settings
from common.wiring import build_runtime
from tests.conftest import ROOT_KEY, SETTINGS_VARIABLES


def assert_json(response: Any, status: int | set[int]) -> Any:
    """The response has this status (or one of these) and a JSON body, never HTML or a stack trace."""
    text = response.get_data(as_text=True)
    allowed = status if isinstance(status, set) else {status}
    assert response.status_code in allowed, (response.status_code, text[:800])
    assert response.mimetype == "application/json", response.mimetype
    assert "Traceback" not in text and "<html" not in text.lower()
    return json.loads(text)


def assert_error(response: Any, status: int | set[int], code: str | None = None) -> dict[str, Any]:
    """A JSON error object with a machine code and a sentence."""
    body = assert_json(response, status)
    assert isinstance(body, dict)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    return body


def runtime_in(home: Path) -> Runtime:
    """An embedded runtime of its own (for module-scoped platforms), built from clean settings."""
    with pytest.MonkeyPatch.context() as mp:
        for name in SETTINGS_VARIABLES:
            mp.delenv(name, raising=False)
        mp.setenv("CONVERGENCE_HOME", str(home))
        mp.setenv("CA_ROOT_API_KEY", ROOT_KEY)
        reset_settings()
        runtime = build_runtime(get_settings())
        reset_settings()
    return runtime


class Clock:
    """A clock a test moves by hand (`clock.now += 60`), for what takes `now=` (rate limiters)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
