"""The interactive API page at /docs: Swagger UI over this function's /openapi.json, with nothing fetched
from anywhere else, so it works offline and behind a firewall.

Swagger UI's script and stylesheet come from the swagger-ui-py package and are inlined into one page, built
once per instance. Served only when ENABLE_API_DOCS is on (by default everywhere but production).
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

ASSETS = files("swagger_ui") / "static"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Convergence API</title>
<style>{css}</style>
</head>
<body>
<div id="swagger-ui"></div>
<script>{bundle}</script>
<script>
window.ui = SwaggerUIBundle({{
  url: {spec_url},
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false
}});
</script>
</body>
</html>
"""


def _inline(name: str, closing: str) -> str:
    """An asset's text, safe inside its element (no early `</script>` or `</style>`)."""
    return (ASSETS / name).read_text(encoding="utf-8").replace(closing, closing.replace("/", "\\/"))


@cache
def docs_page(spec_url: str = "openapi.json") -> str:
    """The HTML page; `spec_url` is relative, so it finds the document beside /docs wherever it is served."""
    return PAGE.format(
        css=_inline("swagger-ui.css", "</style"),
        bundle=_inline("swagger-ui-bundle.js", "</script"),
        spec_url=json.dumps(spec_url),
    )
