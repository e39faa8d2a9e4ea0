"""trigger (HTTPS): runs, status, data. trigger_schedules (CloudEvent): scheduled and bulk runs."""

import functions_framework

from common.api.app import http_handler
from common.services.scheduling import handle_schedule_event

_handle = http_handler("trigger")


@functions_framework.http
def trigger(request):
    return _handle(request)


@functions_framework.cloud_event
def trigger_schedules(cloud_event):
    handle_schedule_event(cloud_event)
