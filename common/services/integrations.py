"""A tenant's provider integrations: format-checked credentials, stored encrypted for tenant and provider.

Setup checks the credential's format and the settings against the provider's models (looked up in
`common.providers.registry`), then hands them to the integrations repository (`common.metadata.integrations`),
which encrypts and stores them. The secret is never echoed, listed or logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from common.contracts.integrations import IntegrationSetupRequest
from common.errors import PayloadTooLarge
from common.metadata import integrations as repository
from common.providers.credential_checks import (
    parse_credential,
    parse_settings,
    require_integration_provider,
    settings_document,
)
from common.runtime import Runtime

__all__ = ["list_integrations", "setup_integration"]

log = logging.getLogger(__name__)
MAX_CREDENTIAL_BYTES = 64 * 1024  # Cloud KMS's plaintext limit; envelope encryption keeps to it anyway


def setup_integration(
    rt: Runtime, org: str, provider: str, request: IntegrationSetupRequest
) -> dict[str, Any]:
    """Check, encrypt and store (replacing any earlier) the credential of one provider; never echo it."""
    require_integration_provider(provider)
    secret = request.credential if isinstance(request.credential, str) else json.dumps(request.credential)
    if len(secret.encode()) > MAX_CREDENTIAL_BYTES:
        raise PayloadTooLarge(f"credential is larger than {MAX_CREDENTIAL_BYTES} bytes")
    parse_credential(provider, request.credential)
    settings = settings_document(parse_settings(provider, request.settings))
    repository.store_integration(rt, org, provider, secret, settings)
    log.info("stored the %s integration of %s (format validated)", provider, org)
    return {
        "org_slug": org,
        "provider": provider,
        "status": "ACTIVE",
        "validated": True,
        "settings": settings,
    }


def list_integrations(rt: Runtime, org: str) -> dict[str, Any]:
    """The tenant's integrations with their (non-secret) settings; never a credential."""
    return {"integrations": repository.list_integrations(rt, org)}
