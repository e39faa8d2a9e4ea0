"""trigger (HTTPS): runs, status, data. trigger_schedules (CloudEvent): scheduled and bulk runs."""

import functions_framework

from common import wiring

_handle = wiring.function_http_handler("trigger")


@functions_framework.http
def trigger(request):
    return _handle(request)


@functions_framework.cloud_event
def trigger_schedules(cloud_event):
    wiring.trigger_schedules(cloud_event)
