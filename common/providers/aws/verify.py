"""The read-only check of an AWS integration: list its cur_location, where runs read the CUR files from."""

from __future__ import annotations

from common.providers.base import Verification, VerificationRequest
from common.providers.file_locations import verify_file_location


def verify_cur_location(request: VerificationRequest) -> Verification:
    """List cur_location as a run would (common.providers.file_locations says what is proved)."""
    return verify_file_location(request, "cur_location")
