"""The check of a DeepSeek key: none can be made yet, so the key stays UNVERIFIED, saying why.

The platform has no setting for DeepSeek's API address (no step reads DeepSeek costs), so it never calls
DeepSeek: a key is only checked for its format. A check would be one GET /user/balance at that address.
"""

from __future__ import annotations

from common.providers.base import Verification, VerificationRequest, unverified


def verify_api_key(request: VerificationRequest) -> Verification:
    """UNVERIFIED: this platform calls no DeepSeek API, so it cannot try the key."""
    return unverified(
        "DeepSeek keys are not tried: this platform has no DeepSeek API address to call (no step reads"
        " DeepSeek yet), so the key was checked for its format only"
    )
