"""onboard (HTTPS): bootstrap, dryrun, onboard, API-key rotation, integrations."""

import functions_framework

from common.wiring import function_http_handler

_handle = function_http_handler("onboard")


@functions_framework.http
def onboard(request):
    return _handle(request)
