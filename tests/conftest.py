"""Shared fixtures: a fresh embedded platform per test, function test clients, onboarded tenants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from common.runtime import Runtime
from common.settings import get_settings, reset_settings
from common.wiring import build_runtime, reset_runtime, set_runtime

REPO = Path(__file__).resolve().parents[1]
# Session fixtures of the emulators and stand-ins (tests/plugins/*.py), shared by every suite.
pytest_plugins = sorted(
    f"tests.plugins.{path.stem}" for path in (REPO / "tests" / "plugins").glob("*.py") if path.stem != "__init__"
)
ROOT_KEY = "test-root-key-0123456789abcdef"
SETTINGS_VARIABLES = (
    "CONVERGENCE_HOME", "CONVERGENCE_WAREHOUSE", "CONVERGENCE_BUS", "CONVERGENCE_KEYRING", "CA_ROOT_API_KEY",
    "GCP_PROJECT_ID", "CONTROL_DATASET", "STEPS_TOPIC", "SCHEDULES_TOPIC", "DEAD_LETTER_TOPIC", "KMS_KEY_NAME",
    "GCP_KMS_KEY_NAME", "KMS_PROJECT_ID", "KMS_LOCATION", "KMS_KEYRING", "KMS_KEY", "ENVIRONMENT", "ENABLE_API_DOCS",
    "BIGQUERY_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", "SMTP_HOST", "OPENAI_API_BASE", "ANTHROPIC_API_BASE",
    "HTTP_TIMEOUT_SECONDS", "HTTP_MAX_ATTEMPTS", "HTTP_BACKOFF_SECONDS", "FILE_SOURCE_ROOTS", "STORAGE_EMULATOR_HOST", "FANOUT_CHUNK_SIZE", "FANOUT_TIME_BUDGET_SECONDS",
    "RATE_LIMIT_PER_MINUTE", "SCHEDULER_LOCATION", "CLOUD_SCHEDULER_ENDPOINT", "DISPATCHER_INTERVAL_SECONDS",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts with no Convergence settings but a private CONVERGENCE_HOME and a root key."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVERGENCE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CA_ROOT_API_KEY", ROOT_KEY)
    reset_settings()
    yield
    reset_runtime()
    reset_settings()


@pytest.fixture
def runtime() -> Runtime:
    """A fresh embedded runtime (DuckDB, local bus, local keyset) installed for handlers to use."""
    rt = build_runtime(get_settings())
    set_runtime(rt)
    return rt


@pytest.fixture
def root_headers() -> dict[str, str]:
    return {"X-CA-Root-Key": ROOT_KEY}


def function_client(target: str, folder: str, signature: str = "http") -> Any:
    """A functions-framework test client for one deployed function, loaded from its main.py."""
    source = str(REPO / "functions" / folder / "main.py")
    return functions_framework.create_app(target, source, signature).test_client()


@pytest.fixture
def onboard_client(runtime: Runtime) -> Any:
    return function_client("onboard", "onboard")


@pytest.fixture
def trigger_client(runtime: Runtime) -> Any:
    return function_client("trigger", "trigger")


@pytest.fixture
def onboard_org(onboard_client: Any, root_headers: dict[str, str]) -> Callable[[str], str]:
    """Bootstrap once, then onboard an organisation and return its API key."""
    assert onboard_client.post("/api/v1/admin/bootstrap", headers=root_headers, json={}).status_code == 200

    def onboard(org: str) -> str:
        body = {"org_slug": org, "company_name": org.title(), "admin_email": f"admin@{org.replace('_', '')}.example.com"}
        response = onboard_client.post("/api/v1/organizations/onboard", headers=root_headers, json=body)
        assert response.status_code == 201, response.json
        return response.json["api_key"]

    return onboard


@pytest.fixture
def two_tenants(onboard_org: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """Two onboarded tenants: {'acme': {'X-API-Key': ...}, 'globex': {...}}."""
    return {org: {"X-API-Key": onboard_org(org)} for org in ("acme", "globex")}


def wait_for_bus(rt: Runtime, timeout: float = 30.0) -> None:
    assert rt.bus.drain(timeout), "the bus did not drain in time"  # type: ignore[attr-defined]


