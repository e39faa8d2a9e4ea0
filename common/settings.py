"""One typed settings object, read once from the environment (CONTRACT §1)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigurationError
from common.types import TenantId

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


class Settings(BaseSettings):
    """Everything Convergence reads from its environment; nothing else reads os.environ."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    convergence_home: Path = Field(
        Path("./.convergence"), description="Embedded state: DuckDB file, keyset, outbox."
    )
    convergence_warehouse: Literal["duckdb", "bigquery"] = Field("duckdb", description="Warehouse adapter.")
    convergence_bus: Literal["local", "pubsub"] = Field("local", description="Message bus adapter.")
    convergence_keyring: Literal["local", "gcp-kms"] = Field("local", description="Keyring adapter.")
    convergence_claims: Literal["local", "gcs"] = Field(
        "local", description="Claims adapter: files under CONVERGENCE_HOME, or a Cloud Storage bucket."
    )
    claims_bucket: str | None = Field(None, description="Cloud Storage bucket of claims (CONVERGENCE_CLAIMS=gcs).")
    claims_storage_emulator_host: str | None = Field(
        None,
        description="Cloud Storage emulator of claims (one that honours generation preconditions); "
        "STORAGE_EMULATOR_HOST when unset.",
    )
    ca_root_api_key: SecretStr | None = Field(None, description="Root key for admin routes.")
    gcp_project_id: str = Field("local-project", description="Project of datasets and topics.")
    bigquery_location: str = Field("US", description="Dataset location.")
    bigquery_emulator_host: str | None = Field(None, description="BigQuery emulator endpoint, if any.")
    pubsub_emulator_host: str | None = Field(None, description="Pub/Sub emulator host:port, if any.")
    kms_key_name: str | None = Field(None, description="Cloud KMS key for the gcp-kms keyring.")
    gcp_kms_key_name: str | None = Field(
        None, description="The described system's name for KMS_KEY_NAME, used when KMS_KEY_NAME is unset."
    )
    kms_project_id: str | None = Field(
        None, description="With KMS_LOCATION, KMS_KEYRING, KMS_KEY: the KMS key."
    )
    kms_location: str | None = Field(None, description="Location of the KMS key ring (with KMS_PROJECT_ID).")
    kms_keyring: str | None = Field(None, description="KMS key ring (with KMS_PROJECT_ID).")
    kms_key: str | None = Field(None, description="KMS crypto key (with KMS_PROJECT_ID).")
    environment: Literal["development", "staging", "production"] = Field(
        "development", description="production refuses the embedded defaults that are unsafe there."
    )
    enable_api_docs: bool | None = Field(
        None, description="Serve the interactive API page at /docs; default true outside production."
    )
    bqemulator_bin: str | None = Field(None, description="bqemulator program for `local up` and tests.")
    control_dataset: TenantId = Field("organizations", description="Control dataset.")
    steps_topic: str = Field("convergence-steps", description="Topic of step messages.")
    schedules_topic: str = Field("convergence-schedules", description="Topic of scheduled and bulk runs.")
    dead_letter_topic: str = Field("convergence-steps-dlq", description="Dead-letter topic of step messages.")

    max_request_bytes: int = Field(
        32 * 1024 * 1024, gt=0, description="Largest accepted request body (413 above)."
    )
    max_json_bytes: int = Field(1024 * 1024, gt=0, description="Largest accepted JSON body (413 above).")
    api_key_cache_size: int = Field(10_000, gt=0, description="API keys remembered per instance.")
    api_key_cache_ttl_seconds: float = Field(
        60.0, ge=0, description="How long another instance may still accept a key revoked elsewhere."
    )
    step_max_attempts: int = Field(5, ge=1, le=100, description="Deliveries of a step before dead-lettering.")
    smtp_host: str | None = Field(None, description="SMTP server for notify.email; outbox files when unset.")
    smtp_port: int = Field(587, description="SMTP port.")
    smtp_username: str | None = Field(None, description="SMTP user.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str = Field("convergence@localhost", description="Sender address of notifications.")
    smtp_starttls: bool = Field(True, description="Use STARTTLS with the SMTP server.")
    openai_api_base: str = Field(
        "https://api.openai.com", pattern=r"^https?://[^\s/]+(/[^\s]*)?$", description="OpenAI API origin."
    )
    anthropic_api_base: str = Field(
        "https://api.anthropic.com",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Anthropic API origin.",
    )
    http_timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one provider API request.")
    http_max_attempts: int = Field(
        6, ge=1, le=20, description="Attempts of a provider API request on 429/5xx."
    )
    http_backoff_seconds: float = Field(1.0, ge=0, description="First backoff between provider API attempts.")
    file_source_roots: str | None = Field(
        None,
        description="Directories (separated by ':') that file sources may read from; CONVERGENCE_HOME/sources"
        " when unset. A tenant reads only its own folder <root>/<tenant_id>/ of each; anything else is refused,"
        " so a tenant can read neither the server's files nor another tenant's.",
    )
    focus_validator_bin: str | None = Field(
        None,
        description="focus-validator program (FOCUS conformance); .venv-focus/bin/focus-validator when unset.",
    )
    fanout_chunk_size: int = Field(
        500,
        ge=1,
        le=5000,
        description="Tenants per second-level schedules message of a fan-out (stays << 512 KB).",
    )
    fanout_time_budget_seconds: float = Field(
        420.0,
        gt=0,
        le=520,
        description="A chunk still starting runs after this hands its remaining tenants on.",
    )
    step_lease_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a step execution holds its run across instances; a step whose instance died"
        " is taken over by the next delivery after this. Keep it above the function's timeout.",
    )
    rate_limit_per_minute: int = Field(
        50,
        ge=1,
        description="Write requests (every method but GET) per tenant and minute (429 with Retry-After above).",
    )
    read_rate_limit_per_minute: int = Field(
        1000,
        ge=1,
        description="Read requests (GET) per tenant and minute, per instance; separate from the writes.",
    )
    scheduler_location: str = Field(
        "us-central1", description="Region of the Cloud Scheduler dispatcher jobs."
    )
    cloud_scheduler_endpoint: str | None = Field(
        None,
        description="Cloud Scheduler API endpoint override (a local stand-in in tests); Google's when unset.",
    )
    dispatcher_interval_seconds: float = Field(
        60.0, gt=0, description="Embedded mode: how often `convergence serve` ticks the local dispatcher."
    )
    storage_emulator_host: str | None = Field(
        None,
        description="Cloud Storage emulator endpoint, read by the Storage client itself (gs:// sources).",
    )

    @field_validator("ca_root_api_key")
    @classmethod
    def _root_key_strength(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("kms_key_name", "gcp_kms_key_name")
    @classmethod
    def _kms_key_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("projects/"):
            raise ValueError("must look like projects/P/locations/L/keyRings/R/cryptoKeys/K")
        return value

    @property
    def api_docs_enabled(self) -> bool:
        """Whether /docs is served: ENABLE_API_DOCS, else everywhere but production."""
        return self.enable_api_docs if self.enable_api_docs is not None else self.environment != "production"

    @property
    def duckdb_path(self) -> Path:
        return self.convergence_home / "warehouse.duckdb"

    @property
    def claims_path(self) -> Path:
        return self.convergence_home / "claims"

    @property
    def keyset_path(self) -> Path:
        return self.convergence_home / "keyset.json"

    @property
    def outbox_dir(self) -> Path:
        return self.convergence_home / "outbox"

    @property
    def root_key_path(self) -> Path:
        return self.convergence_home / "root_key"

    @property
    def source_roots(self) -> list[Path]:
        """Directories whose files a tenant's file source may name (resolved, absolute)."""
        raw = [p for p in (self.file_source_roots or "").split(":") if p.strip()]
        roots = [Path(p).expanduser() for p in raw] or [self.convergence_home / "sources"]
        return [r.resolve() for r in roots]


def load_settings() -> Settings:
    """Read settings, turning a bad value into one line that names the variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigurationError(f"{variable}: {first['msg']}") from None
    settings = settings.model_copy(update={"kms_key_name": _kms_key_name(settings)})
    if settings.convergence_keyring == "gcp-kms" and not settings.kms_key_name:
        raise ConfigurationError("KMS_KEY_NAME: required when CONVERGENCE_KEYRING=gcp-kms")
    if settings.convergence_claims == "gcs" and not settings.claims_bucket:
        raise ConfigurationError("CLAIMS_BUCKET: required when CONVERGENCE_CLAIMS=gcs")
    _refuse_unsafe_production(settings)
    return settings


KMS_PARTS = ("kms_project_id", "kms_location", "kms_keyring", "kms_key")


def _kms_key_name(settings: Settings) -> str | None:
    """The KMS key: KMS_KEY_NAME, else GCP_KMS_KEY_NAME, else built from KMS_PROJECT_ID, KMS_LOCATION,
    KMS_KEYRING and KMS_KEY (the described system's names). Settings that name different keys stop start-up."""
    parts = {name: getattr(settings, name) for name in KMS_PARTS}
    given = [name for name, value in parts.items() if value]
    composed = None
    if given:
        missing = [name.upper() for name in KMS_PARTS if name not in given]
        if missing:
            raise ConfigurationError(
                f"{', '.join(missing)}: required with {', '.join(n.upper() for n in given)} to name the KMS key"
            )
        composed = (
            f"projects/{parts['kms_project_id']}/locations/{parts['kms_location']}"
            f"/keyRings/{parts['kms_keyring']}/cryptoKeys/{parts['kms_key']}"
        )
    named = [
        (variable, value)
        for variable, value in (
            ("KMS_KEY_NAME", settings.kms_key_name),
            ("GCP_KMS_KEY_NAME", settings.gcp_kms_key_name),
            ("KMS_PROJECT_ID + KMS_LOCATION + KMS_KEYRING + KMS_KEY", composed),
        )
        if value
    ]
    for variable, value in named[1:]:
        if value != named[0][1]:
            raise ConfigurationError(
                f"{named[0][0]} and {variable} name different KMS keys ({named[0][1]} and {value}): set one"
            )
    return named[0][1] if named else None


def _refuse_unsafe_production(settings: Settings) -> None:
    """ENVIRONMENT=production runs on Google Cloud: the embedded adapters and a generated root key are refused."""
    if settings.environment != "production":
        return
    for variable, value, embedded in (
        ("CONVERGENCE_WAREHOUSE", settings.convergence_warehouse, "duckdb"),
        ("CONVERGENCE_BUS", settings.convergence_bus, "local"),
        ("CONVERGENCE_KEYRING", settings.convergence_keyring, "local"),
        ("CONVERGENCE_CLAIMS", settings.convergence_claims, "local"),
    ):
        if value == embedded:
            raise ConfigurationError(f"{variable}: {embedded} is the embedded default, refused in production")
    if settings.ca_root_api_key is None:
        raise ConfigurationError("CA_ROOT_API_KEY: required in production (it is never generated there)")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
