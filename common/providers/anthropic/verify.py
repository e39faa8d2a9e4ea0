"""The read-only check of an Anthropic admin key: yesterday's cost report, asked for as anthropic.costs asks.

One GET /v1/organizations/cost_report at ANTHROPIC_API_BASE (one daily bucket): if it answers, the key
can read what the step reads. What each answer means is common.providers.http_probe's.
"""

from __future__ import annotations

import datetime as dt

from common.providers.anthropic.costs_api import COST_REPORT_PATH, LABEL, request_headers, request_params
from common.providers.anthropic.credentials import AnthropicAdminKey
from common.providers.base import Verification, VerificationRequest
from common.providers.http_probe import probe_api_key
from common.sources.cost_window import CostWindow
from common.types import utcnow


def verify_admin_key(request: VerificationRequest) -> Verification:
    """Ask the cost report API for yesterday (UTC) with the admin key."""
    assert isinstance(request.credential, AnthropicAdminKey)  # the registry pairs the check with its model
    key = request.credential.root.get_secret_value()
    yesterday = utcnow().date() - dt.timedelta(days=1)
    return probe_api_key(
        request,
        label=LABEL,
        base_url=request.runtime.settings.anthropic_api_base,
        base_setting="ANTHROPIC_API_BASE",
        path=COST_REPORT_PATH,
        params=request_params(CostWindow.for_day(yesterday)),
        headers=request_headers(key),
    )
