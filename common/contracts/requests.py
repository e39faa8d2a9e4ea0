"""Request bodies under the names services and tools import them by; each is defined in its area's module."""

from __future__ import annotations

from common.contracts.integrations import IntegrationSetupRequest
from common.contracts.onboarding import (
    BootstrapRequest,
    CustomerOnboardRequest,
    DryrunRequest,
    OnboardRequest,
    Plan,
)
from common.contracts.pipelines import RunRequest
from common.contracts.schedules import SCHEDULE_TEMPLATE_PATTERN, ScheduleRequest
from common.types import EMAIL_PATTERN, TENANT_ID_PATTERN

__all__ = [
    "EMAIL_PATTERN",
    "SCHEDULE_TEMPLATE_PATTERN",
    "TENANT_ID_PATTERN",
    "BootstrapRequest",
    "CustomerOnboardRequest",
    "DryrunRequest",
    "IntegrationSetupRequest",
    "OnboardRequest",
    "Plan",
    "RunRequest",
    "ScheduleRequest",
]
