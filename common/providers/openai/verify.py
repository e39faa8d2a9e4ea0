"""The read-only check of an OpenAI admin key: yesterday's costs, asked for exactly as openai.costs asks.

One GET /v1/organization/costs at OPENAI_API_BASE (one daily bucket): if it answers, the key can read
what the step reads. What each answer means is common.providers.http_probe's.
"""

from __future__ import annotations

import datetime as dt

from common.providers.base import Verification, VerificationRequest
from common.providers.http_probe import probe_api_key
from common.providers.openai.costs_api import COSTS_PATH, LABEL, request_headers, request_params
from common.providers.openai.credentials import OpenAiAdminKey
from common.sources.cost_window import CostWindow
from common.types import utcnow


def verify_admin_key(request: VerificationRequest) -> Verification:
    """Ask the costs API for yesterday (UTC) with the admin key."""
    assert isinstance(request.credential, OpenAiAdminKey)  # the registry pairs the check with its model
    key = request.credential.root.get_secret_value()
    yesterday = utcnow().date() - dt.timedelta(days=1)
    return probe_api_key(
        request,
        label=LABEL,
        base_url=request.runtime.settings.openai_api_base,
        base_setting="OPENAI_API_BASE",
        path=COSTS_PATH,
        params=request_params(CostWindow.for_day(yesterday)),
        headers=request_headers(key),
    )
