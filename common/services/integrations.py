"""A tenant's provider integrations: checked with the provider, stored encrypted for tenant and provider.

Setup checks the credential's format and the settings against the provider's models (looked up in
`common.providers.registry`), then asks the provider whether the credential works with one read-only call
(`common.providers.verification`; each provider's check is its package's verify module), and hands all of it
to the integrations repository (`common.metadata.integrations`), which encrypts and stores it.

The answer says what the call found: ACTIVE (proved; `validated`), UNVERIFIED (a format check only, e.g. the
provider could not be reached) or INVALID (the provider refused it). The credential is stored in all three
cases, so a provider's outage never loses a setup: a later `validate` checks the stored one again, and a
malformed credential is still refused (422) before anything is stored. The secret is never echoed, listed or
logged, and every message is redacted against it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from common.contracts.integrations import IntegrationSetupRequest
from common.errors import NotFound, PayloadTooLarge, ValidationFailed
from common.metadata import integrations as repository
from common.providers.base import Verification, refused
from common.providers.credential_checks import (
    parse_credential,
    parse_settings,
    require_integration_provider,
    settings_document,
)
from common.providers.verification import verify_credential
from common.runtime import Runtime
from common.types import utcnow

__all__ = [
    "delete_integration", "get_integration", "list_integrations", "setup_integration", "validate_integration",
]  # fmt: skip

log = logging.getLogger(__name__)
MAX_CREDENTIAL_BYTES = 64 * 1024  # Cloud KMS's plaintext limit; envelope encryption keeps to it anyway


class IntegrationNotFound(NotFound):
    """The tenant has no integration of this provider."""

    code = "integration_not_found"


def _validate_route(org: str, provider: str) -> str:
    return f"POST /api/v1/integrations/{org}/{provider}/validate"


def _explained(check: Verification, org: str, provider: str) -> str:
    """The check's message, with what the tenant can do next when the credential is not proved."""
    if check.status == "UNVERIFIED":
        return (
            f"{check.message}; stored after a format check only: {_validate_route(org, provider)} tries again"
        )
    if check.status == "INVALID":
        return (
            f"{check.message}; stored, but runs that need it fail until it is fixed: set it up again, or fix"
            f" it at the provider and call {_validate_route(org, provider)}"
        )
    return check.message


def setup_integration(
    rt: Runtime, org: str, provider: str, request: IntegrationSetupRequest
) -> dict[str, Any]:
    """Check, try with the provider, encrypt and store (replacing any earlier) the credential of one provider;
    answer what the provider's check found, never the credential."""
    require_integration_provider(provider)
    secret = request.credential if isinstance(request.credential, str) else json.dumps(request.credential)
    if len(secret.encode()) > MAX_CREDENTIAL_BYTES:
        raise PayloadTooLarge(f"credential is larger than {MAX_CREDENTIAL_BYTES} bytes")
    credential = parse_credential(provider, request.credential)
    settings_model = parse_settings(provider, request.settings)
    settings = settings_document(settings_model)
    check = verify_credential(rt, org, provider, credential, settings_model, raw_secret=secret)
    message, checked_at = _explained(check, org, provider), utcnow()
    repository.store_integration(
        rt, org, provider, secret, settings, status=check.status, message=message, checked_at=checked_at
    )
    log.info("stored the %s integration of %s: %s (%s)", provider, org, check.status, check.message)
    return {
        "org_slug": org,
        "provider": provider,
        "status": check.status,
        "validated": check.validated,
        "message": message,
        "checked_at": checked_at,
        "settings": settings,
    }


def validate_integration(rt: Runtime, org: str, provider: str) -> dict[str, Any]:
    """Try the stored credential of one provider again with one read-only call; record and answer what it
    found."""
    require_integration_provider(provider)
    stored = repository.find_integration(rt, org, provider)
    if stored is None:
        raise IntegrationNotFound(f"{org} has no {provider} integration", provider=provider)
    secret = stored.credential.get_secret_value()
    try:
        credential = parse_credential(provider, secret)
        settings_model = parse_settings(provider, stored.settings)
    except ValidationFailed as exc:  # the format rules changed since it was stored; messages name no secret
        check = refused(f"the stored integration no longer passes the format check ({exc.message})")
    else:
        check = verify_credential(rt, org, provider, credential, settings_model, raw_secret=secret)
    message, checked_at = _explained(check, org, provider), utcnow()

    def record(ciphertext: str) -> bool:
        return repository.record_check(
            rt,
            org,
            provider,
            ciphertext=ciphertext,
            status=check.status,
            message=message,
            checked_at=checked_at,
        )

    if not record(stored.ciphertext):  # changed while the provider was asked
        current = repository.find_integration(rt, org, provider)
        if current is None:
            raise IntegrationNotFound(f"{org} has no {provider} integration", provider=provider)
        # Re-encrypted meanwhile (key rotation) it is the credential just tried; replaced, it is not.
        if current.credential.get_secret_value() != secret or not record(current.ciphertext):
            return _check_answer(provider, current.status, current.message or "", current.checked_at)
    log.info("checked the %s integration of %s: %s (%s)", provider, org, check.status, check.message)
    return _check_answer(provider, check.status, message, checked_at)


def _check_answer(provider: str, status: str, message: str, checked_at: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "status": status,
        "validated": status == "ACTIVE",
        "message": message,
        "checked_at": checked_at,
    }


def delete_integration(rt: Runtime, org: str, provider: str) -> dict[str, Any]:
    """Delete the tenant's integration of one provider, credential and all; runs needing it then fail saying
    it is missing."""
    require_integration_provider(provider)
    if not repository.delete_integration(rt, org, provider):
        raise IntegrationNotFound(f"{org} has no {provider} integration", provider=provider)
    log.info("deleted the %s integration of %s", provider, org)
    return {"provider": provider, "deleted": True}


def list_integrations(rt: Runtime, org: str) -> dict[str, Any]:
    """The tenant's integrations with their (non-secret) settings and last check; never a credential."""
    return {"integrations": repository.list_integrations(rt, org)}


def get_integration(rt: Runtime, org: str, provider: str) -> dict[str, Any]:
    """One integration of the tenant as listed (settings and last check); never its credential."""
    require_integration_provider(provider)
    found = repository.list_integrations(rt, org, provider)
    if not found:
        raise IntegrationNotFound(f"{org} has no {provider} integration", provider=provider)
    return found[0]
