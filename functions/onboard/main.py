"""onboard (HTTPS): bootstrap, dryrun, onboard, API-key rotation, integrations."""

import functions_framework

from common.api.app import http_handler

_handle = http_handler("onboard")


@functions_framework.http
def onboard(request):
    return _handle(request)
