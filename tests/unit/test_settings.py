"""Settings (CONTRACT §1): documented defaults, and one clear line naming a bad variable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from common.errors import ConfigurationError
from common.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "convergence"
VALID_KMS_KEY = "projects/p/locations/us/keyRings/r/cryptoKeys/k"

BAD_SETTINGS = [
    ("CONVERGENCE_WAREHOUSE", {"CONVERGENCE_WAREHOUSE": "oracle"}),
    ("CONVERGENCE_BUS", {"CONVERGENCE_BUS": "kafka"}),
    ("CONVERGENCE_KEYRING", {"CONVERGENCE_KEYRING": "vault"}),
    ("CONTROL_DATASET", {"CONTROL_DATASET": "Bad-Name"}),
    ("CONTROL_DATASET", {"CONTROL_DATASET": "x"}),
    ("KMS_KEY_NAME", {"KMS_KEY_NAME": "nonsense"}),
    ("KMS_KEY_NAME", {"CONVERGENCE_KEYRING": "gcp-kms"}),
]


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVERGENCE_HOME")
    monkeypatch.delenv("CA_ROOT_API_KEY")
    settings = load_settings()
    assert settings.convergence_home == Path("./.convergence")
    assert settings.convergence_warehouse == "duckdb"
    assert settings.convergence_bus == "local"
    assert settings.convergence_keyring == "local"
    assert settings.ca_root_api_key is None
    assert settings.gcp_project_id == "local-project"
    assert settings.bigquery_location == "US"
    assert settings.bigquery_emulator_host is None
    assert settings.pubsub_emulator_host is None
    assert settings.kms_key_name is None
    assert settings.control_dataset == "organizations"
    assert settings.steps_topic == "convergence-steps"
    assert settings.schedules_topic == "convergence-schedules"
    assert settings.dead_letter_topic == "convergence-steps-dlq"


def test_embedded_state_lives_under_convergence_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENCE_HOME", str(tmp_path / "state"))
    settings = load_settings()
    for path in (settings.duckdb_path, settings.keyset_path, settings.root_key_path, settings.outbox_dir):
        assert path.parent == tmp_path / "state"


def test_every_documented_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "CONVERGENCE_WAREHOUSE": "bigquery",
        "CONVERGENCE_BUS": "pubsub",
        "CONVERGENCE_KEYRING": "gcp-kms",
        "CA_ROOT_API_KEY": "r" * 40,
        "GCP_PROJECT_ID": "prod-123",
        "BIGQUERY_LOCATION": "EU",
        "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9050",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085",
        "KMS_KEY_NAME": VALID_KMS_KEY,
        "CONTROL_DATASET": "control_plane",
        "STEPS_TOPIC": "s",
        "SCHEDULES_TOPIC": "c",
        "DEAD_LETTER_TOPIC": "d",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.convergence_warehouse == "bigquery"
    assert settings.convergence_bus == "pubsub"
    assert settings.convergence_keyring == "gcp-kms"
    assert settings.ca_root_api_key is not None and settings.ca_root_api_key.get_secret_value() == "r" * 40
    assert (settings.gcp_project_id, settings.bigquery_location) == ("prod-123", "EU")
    assert settings.bigquery_emulator_host == "http://127.0.0.1:9050"
    assert settings.pubsub_emulator_host == "127.0.0.1:8085"
    assert settings.kms_key_name == VALID_KMS_KEY
    assert settings.control_dataset == "control_plane"
    assert (settings.steps_topic, settings.schedules_topic, settings.dead_letter_topic) == ("s", "c", "d")


def test_root_key_is_secret_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CA_ROOT_API_KEY", "super-secret-root-key-0123456789")
    settings = load_settings()
    assert "super-secret-root-key" not in repr(settings)
    assert "super-secret-root-key" not in str(settings)


@pytest.mark.parametrize(("variable", "environment"), BAD_SETTINGS, ids=[f"{v}-{e}" for v, e in BAD_SETTINGS])
def test_bad_setting_is_one_line_naming_the_variable(
    variable: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith(variable), message
    assert "\n" not in message
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_gcp_kms_with_a_key_name_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENCE_KEYRING", "gcp-kms")
    monkeypatch.setenv("KMS_KEY_NAME", VALID_KMS_KEY)
    assert load_settings().kms_key_name == VALID_KMS_KEY


def _cli_environment(extra: dict[str, str], home: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR")
    environment = {k: v for k, v in os.environ.items() if k in keep}
    environment.update({"CONVERGENCE_HOME": str(home), "PYTHONUNBUFFERED": "1", **extra})
    return environment


@pytest.fixture(scope="module")
def serve_with(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, str]], CompletedProcess]:
    """Run `convergence serve` once per bad environment (the tests below share the runs to stay fast)."""
    runs: dict[tuple[tuple[str, str], ...], CompletedProcess] = {}

    def run(environment: dict[str, str]) -> CompletedProcess:
        key = tuple(sorted(environment.items()))
        if key not in runs:
            home = tmp_path_factory.mktemp("cli") / "home"
            command = (
                [str(CLI), "serve", "--port", "0"]
                if CLI.exists()
                else [sys.executable, "-m", "convergence.cli", "serve"]
            )
            runs[key] = subprocess.run(
                command,
                check=False,
                env=_cli_environment(environment, home),
                capture_output=True,
                text=True,
                timeout=60,
            )
        return runs[key]

    return run


@pytest.mark.parametrize(("variable", "environment"), BAD_SETTINGS, ids=[f"{v}-{e}" for v, e in BAD_SETTINGS])
def test_serve_with_a_bad_setting_exits_with_one_line_naming_the_variable(
    variable: str, environment: dict[str, str], serve_with: Callable[[dict[str, str]], CompletedProcess]
) -> None:
    result = serve_with(environment)
    assert result.returncode != 0
    output = (result.stderr + result.stdout).strip()
    assert "Traceback" not in output
    assert "Convergence serving" not in output
    lines = output.splitlines()
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    assert variable in lines[0]


@pytest.mark.parametrize(("variable", "environment"), BAD_SETTINGS, ids=[f"{v}-{e}" for v, e in BAD_SETTINGS])
def test_serve_prints_the_settings_error_verbatim(
    variable: str,
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    serve_with: Callable[[dict[str, str]], CompletedProcess],
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    expected = caught.value.message
    output = " ".join(serve_with(environment).stderr.split())
    assert expected in output, f"the message was altered on its way out: {output!r} vs {expected!r}"


# -- the described system's KMS names, ENVIRONMENT and ENABLE_API_DOCS ----------------------------------


def test_gcp_kms_key_name_sets_the_key_when_kms_key_name_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVERGENCE_KEYRING", "gcp-kms")
    monkeypatch.setenv("GCP_KMS_KEY_NAME", VALID_KMS_KEY)
    assert load_settings().kms_key_name == VALID_KMS_KEY


def test_the_four_kms_parts_build_the_key_name(monkeypatch: pytest.MonkeyPatch) -> None:
    parts = {"KMS_PROJECT_ID": "prod-123", "KMS_LOCATION": "us-central1", "KMS_KEYRING": "ring", "KMS_KEY": "kek"}
    for name, value in parts.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVERGENCE_KEYRING", "gcp-kms")
    assert load_settings().kms_key_name == "projects/prod-123/locations/us-central1/keyRings/ring/cryptoKeys/kek"


def test_agreeing_kms_settings_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMS_KEY_NAME", VALID_KMS_KEY)
    monkeypatch.setenv("GCP_KMS_KEY_NAME", VALID_KMS_KEY)
    assert load_settings().kms_key_name == VALID_KMS_KEY


def test_disagreeing_kms_settings_stop_start_up_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMS_KEY_NAME", VALID_KMS_KEY)
    for name, value in {"KMS_PROJECT_ID": "other", "KMS_LOCATION": "eu", "KMS_KEYRING": "r", "KMS_KEY": "k"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith("KMS_KEY_NAME and KMS_PROJECT_ID + KMS_LOCATION + KMS_KEYRING + KMS_KEY"), message
    assert "\n" not in message


def test_an_incomplete_set_of_kms_parts_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMS_PROJECT_ID", "prod-123")
    monkeypatch.setenv("KMS_KEY", "kek")
    with pytest.raises(ConfigurationError, match=r"^KMS_LOCATION, KMS_KEYRING: required with KMS_PROJECT_ID, KMS_KEY"):
        load_settings()


def test_api_docs_are_on_outside_production_and_follow_enable_api_docs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().environment == "development" and load_settings().api_docs_enabled
    monkeypatch.setenv("ENABLE_API_DOCS", "false")
    assert not load_settings().api_docs_enabled


@pytest.mark.parametrize(
    ("variable", "overrides"),
    [
        ("CONVERGENCE_WAREHOUSE", {"CONVERGENCE_WAREHOUSE": "duckdb"}),
        ("CONVERGENCE_BUS", {"CONVERGENCE_BUS": "local"}),
        ("CONVERGENCE_KEYRING", {"CONVERGENCE_KEYRING": "local"}),
        ("CONVERGENCE_CLAIMS", {"CONVERGENCE_CLAIMS": "local"}),
        ("CA_ROOT_API_KEY", {"CA_ROOT_API_KEY": ""}),
    ],
)
def test_production_refuses_the_embedded_defaults(
    variable: str, overrides: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployed = {"ENVIRONMENT": "production", "CONVERGENCE_WAREHOUSE": "bigquery", "CONVERGENCE_BUS": "pubsub",
                "CONVERGENCE_KEYRING": "gcp-kms", "KMS_KEY_NAME": VALID_KMS_KEY,
                "CONVERGENCE_CLAIMS": "gcs", "CLAIMS_BUCKET": "acme-claims"}  # fmt: skip
    for name, value in {**deployed, **overrides}.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.message.startswith(variable), caught.value.message


def test_production_with_the_google_cloud_adapters_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = {"ENVIRONMENT": "production", "CONVERGENCE_WAREHOUSE": "bigquery", "CONVERGENCE_BUS": "pubsub",
                "CONVERGENCE_KEYRING": "gcp-kms", "GCP_KMS_KEY_NAME": VALID_KMS_KEY,
                "CONVERGENCE_CLAIMS": "gcs", "CLAIMS_BUCKET": "acme-claims"}  # fmt: skip
    for name, value in deployed.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.environment == "production" and settings.kms_key_name == VALID_KMS_KEY
    assert not settings.api_docs_enabled
