"""Whether a tenant's credential works: its provider's read-only check, run safely.

The provider's `verify` (registered with its ProviderSpec) makes one read-only call and says ACTIVE,
UNVERIFIED or INVALID. Here the call is bounded (at most VERIFY_TIMEOUT_SECONDS, or HTTP_TIMEOUT_SECONDS when
lower: setup waits for it), a check that fails in a way nobody foresaw becomes UNVERIFIED instead of an error,
and the message is scrubbed of the credential's secrets before anyone sees it (the checks themselves redact
what they repeat of a provider's answers).
"""

from __future__ import annotations

import logging

from pydantic import BaseModel

from common.errors import ConvergenceError
from common.providers.base import (
    SettingsModel,
    Verification,
    VerificationRequest,
    scrub,
    secret_values,
    unverified,
)
from common.providers.registry import integration_provider
from common.runtime import Runtime

log = logging.getLogger(__name__)
VERIFY_TIMEOUT_SECONDS = 10.0


def verify_credential(
    rt: Runtime,
    org: str,
    provider: str,
    credential: BaseModel,
    settings: SettingsModel,
    *,
    raw_secret: str = "",
) -> Verification:
    """The outcome of the provider's read-only check of `credential` (already format-checked); never raises
    for what the provider answers. `raw_secret` is the credential as the tenant sent it, redacted too."""
    spec = integration_provider(provider)
    secrets = tuple(secret_values(credential))
    if spec.verify is None:
        outcome = unverified(f"no read-only check of {provider} credentials exists; checked for format only")
    else:
        timeout = min(VERIFY_TIMEOUT_SECONDS, rt.settings.http_timeout_seconds)
        request = VerificationRequest(rt, org, credential, settings, timeout, secrets)
        try:
            outcome = spec.verify(request)
        except ConvergenceError as exc:  # a check answers its refusals; an error escaping it proves nothing
            outcome = unverified(exc.message)
        except Exception as exc:  # noqa: BLE001  (a check never turns a setup into a 500; only the type is kept)
            log.warning("the %s check of %s failed unexpectedly (%s)", provider, org, type(exc).__name__)
            outcome = unverified(f"the {provider} check failed unexpectedly ({type(exc).__name__})")
    return Verification(outcome.status, scrub(outcome.message, secrets, exact=(raw_secret,)))
