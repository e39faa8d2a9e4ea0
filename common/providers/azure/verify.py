"""The read-only check of an Azure integration: list its export_location, where runs read the exports from."""

from __future__ import annotations

from common.providers.base import Verification, VerificationRequest
from common.providers.file_locations import verify_file_location


def verify_export_location(request: VerificationRequest) -> Verification:
    """List export_location as a run would (common.providers.file_locations says what is proved)."""
    return verify_file_location(request, "export_location")
