"""Store and list a tenant's provider credentials: envelope-encrypted, bound to tenant and provider."""

from __future__ import annotations

import base64
import json
from typing import Any

from common.api.models import IntegrationSetupRequest
from common.errors import BadRequest, PayloadTooLarge
from common.metadata.control import control_ref
from common.runtime import Runtime
from common.services.runs import utcnow

PROVIDERS = ("gcp", "aws", "azure", "openai", "anthropic", "deepseek")
MAX_CREDENTIAL_BYTES = 64 * 1024


def credential_purpose(provider: str) -> str:
    return f"integration:{provider}"


def setup_integration(rt: Runtime, org: str, provider: str, request: IntegrationSetupRequest) -> dict[str, Any]:
    """Encrypt and store (replacing any earlier) credential of one provider; never echo it."""
    if provider not in PROVIDERS:
        raise BadRequest(f"provider must be one of: {', '.join(PROVIDERS)}", code="unknown_provider")
    secret = request.credential if isinstance(request.credential, str) else json.dumps(request.credential)
    if len(secret.encode()) > MAX_CREDENTIAL_BYTES:
        raise PayloadTooLarge(f"credential is larger than {MAX_CREDENTIAL_BYTES} bytes")
    ciphertext = rt.keyring.encrypt(org, credential_purpose(provider), secret.encode())
    now = utcnow()
    table = control_ref(rt, "org_integration_credentials")
    rt.warehouse.run_atomically(
        [
            (f"DELETE FROM {table} WHERE org_slug = @org AND provider = @provider", {"org": org, "provider": provider}),
            (
                f"INSERT INTO {table} (org_slug, provider, encrypted_credential, settings, status, validated,"
                " created_at, updated_at) VALUES (@org, @provider, @ciphertext, @settings, 'STORED', FALSE, @now, @now)",
                {"org": org, "provider": provider, "ciphertext": base64.b64encode(ciphertext).decode(),
                 "settings": json.dumps(request.settings, sort_keys=True), "now": now},
            ),  # fmt: skip
        ]
    )
    return {"org_slug": org, "provider": provider, "status": "STORED", "validated": False}


def list_integrations(rt: Runtime, org: str) -> dict[str, Any]:
    """The tenant's integrations, without secrets."""
    rows = rt.warehouse.query(
        f"SELECT provider, status, validated, created_at, updated_at FROM"
        f" {control_ref(rt, 'org_integration_credentials')} WHERE org_slug = @org ORDER BY provider",
        {"org": org},
    )
    return {"integrations": rows}


def read_credential(rt: Runtime, org: str, provider: str) -> str | None:
    """Decrypt one credential (only inside the step that needs it)."""
    rows = rt.warehouse.query(
        f"SELECT encrypted_credential FROM {control_ref(rt, 'org_integration_credentials')}"
        " WHERE org_slug = @org AND provider = @provider LIMIT 1",
        {"org": org, "provider": provider},
    )
    if not rows:
        return None
    ciphertext = base64.b64decode(rows[0]["encrypted_credential"])
    return rt.keyring.decrypt(org, credential_purpose(provider), ciphertext).decode()
