"""A fault of the platform (a bug, a tenant keyset that no longer decrypts) answers 500 with a JSON error
carrying an incident id, the same id the log line carries; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from common.crypto.keyring import DecryptionFailed
from common.services import pipelines


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (RuntimeError("a bug: list index out of range"), "internal_error"),
        (
            DecryptionFailed("the tenant keyset does not decrypt under the key encryption key"),
            "decryption_failed",
        ),
    ],
)
def test_a_platform_fault_answers_json_with_the_incident_id_it_logged(
    trigger_client: Any,
    two_tenants: dict[str, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Exception,
    code: str,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise fault

    monkeypatch.setattr(pipelines, "list_runs", broken)
    with caplog.at_level(logging.ERROR, logger="common.api.http"):
        answer = trigger_client.get("/api/v1/pipelines/runs", headers=two_tenants["acme"])

    assert answer.status_code == 500 and answer.mimetype == "application/json"
    body = answer.json
    assert body["error"] == code and len(body["incident_id"]) == 32
    assert body["incident_id"] in body["message"] and "Traceback" not in answer.get_data(as_text=True)
    assert any(body["incident_id"] in record.getMessage() for record in caplog.records)
