"""Google Cloud's credential (a service account key file) and settings (the billing export table)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import AfterValidator, ConfigDict, Field, SecretStr

from common.providers.base import CredentialModel, SettingsModel
from common.types import Email

# BigQuery project ids: 6-30 of a-z0-9-, a letter first, no hyphen last; legacy ones may be `domain:project`.
GCP_PROJECT = r"(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
BILLING_EXPORT_TABLE = (
    rf"^(?P<project>{GCP_PROJECT})\.(?P<dataset>[A-Za-z0-9_]{{1,1024}})\.(?P<table>[A-Za-z0-9_$-]{{1,1024}})$"
)


def _pem_private_key(value: SecretStr) -> SecretStr:
    try:
        load_pem_private_key(value.get_secret_value().encode(), password=None)
    except TypeError:
        raise ValueError(
            "is an encrypted PEM private key; a service account key file holds an unencrypted one"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("is not a PEM private key") from None
    return value


class GcpServiceAccount(CredentialModel):
    """A service account key file (JSON). Its other fields (private_key_id, token_uri, ...) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True)
    also_secret = ("private_key_id",)

    type: Literal["service_account"] = Field(description="'service_account'")
    project_id: str = Field(pattern=rf"^{GCP_PROJECT}$", description="a Google Cloud project id")
    client_email: Email = Field(description="an email address")
    private_key: Annotated[SecretStr, AfterValidator(_pem_private_key)] = Field(
        description="a PEM private key"
    )

    def info(self) -> dict[str, Any]:
        """The key file as google-auth's `Credentials.from_service_account_info` takes it (secret revealed)."""
        return {**self.model_dump(), "private_key": self.private_key.get_secret_value()}


class GcpSettings(SettingsModel):
    billing_export_table: str = Field(
        pattern=BILLING_EXPORT_TABLE,
        description="the BigQuery billing export table as project.dataset.table, e.g. "
        "my-project.billing.gcp_billing_export_v1_0123AB_456789_ABCDEF",
    )

    def table_parts(self) -> tuple[str, str, str]:
        """(project, dataset, table) of the billing export."""
        match = re.fullmatch(BILLING_EXPORT_TABLE, self.billing_export_table)
        assert match is not None  # the field's pattern guarantees it
        return match["project"], match["dataset"], match["table"]
