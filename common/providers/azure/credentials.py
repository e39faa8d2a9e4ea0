"""Azure's credential (a Microsoft Entra service principal) and settings (where the exports are)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr

from common.providers.base import CredentialModel, DataLocation, SettingsModel, secret_matching

UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class AzureServicePrincipal(CredentialModel):
    """A Microsoft Entra service principal (app registration) with a client secret."""

    tenant_id: str = Field(pattern=UUID, description="a UUID (the directory id)")
    client_id: str = Field(pattern=UUID, description="a UUID (the application id)")
    client_secret: Annotated[
        SecretStr, AfterValidator(secret_matching(r"\S(?:.*\S)?", "a non-empty secret"))
    ] = Field(description="the client secret")


class AzureSettings(SettingsModel):
    export_location: DataLocation = Field(description="where the Cost Management export files are")
