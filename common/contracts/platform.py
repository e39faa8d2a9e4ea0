"""What the platform answers about itself: its health, its OpenAPI document and the page that shows it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, RootModel

from common.contracts.base import ResponseBody


class Health(ResponseBody):
    """The instance is up and its warehouse answers; names the adapters it runs on."""

    status: Literal["ok"]
    warehouse: str = Field(description="Warehouse adapter, e.g. duckdb or bigquery.")
    bus: str = Field(description="Message bus adapter, e.g. local or pubsub.")
    keyring: str = Field(description="Keyring adapter, e.g. local or gcp-kms.")


class OpenApiDocument(ResponseBody):
    """An OpenAPI 3.1 document of the routes the answering function serves."""

    model_config = ConfigDict(extra="allow")

    openapi: str = Field(pattern=r"^3\.")
    info: dict[str, Any]
    paths: dict[str, dict[str, Any]]
    components: dict[str, Any]


class HtmlPage(RootModel[str]):
    """A self-contained HTML page (text/html): it loads nothing from anywhere else."""
