"""The interactive API page at /docs: served by every function when ENABLE_API_DOCS is on, offline."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from common.settings import reset_settings
from tests.e2e.support import assert_error


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.mark.parametrize("client", ["onboard_client", "trigger_client"])
def test_docs_page_is_swagger_ui_over_the_functions_own_document_and_loads_nothing_else(
    request: pytest.FixtureRequest, client: str
) -> None:
    response = request.getfixturevalue(client).get("/docs")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    text = response.get_data(as_text=True)
    page = Elements()
    page.feed(text)
    external = [(tag, attrs) for tag, attrs in page.tags if attrs.get("src") or attrs.get("href")]
    assert external == [], "the page must not load a script, stylesheet or icon from anywhere"
    assert len(page.scripts) == 2 and "SwaggerUIBundle" in page.scripts[0], "the bundle is inline"
    setup = page.scripts[1]
    assert re.search(r'url: "openapi\.json"', setup), "the spec is the answering function's own document"
    assert "validatorUrl: null" in setup, "no call to the public validator"
    (style,) = re.findall(r"<style>(.*?)</style>", text, re.DOTALL)
    images = re.findall(r"url\(([^)]*)", style)
    assert images and all(i.strip("'\"").startswith("data:") for i in images), (
        "the stylesheet's images are inline"
    )


def test_docs_page_is_off_when_enable_api_docs_is_false(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("ENABLE_API_DOCS", "false")
    reset_settings()
    client = request.getfixturevalue("trigger_client")

    error = assert_error(client.get("/docs"), 404, "api_docs_disabled")
    assert "/openapi.json" in error["message"]
    assert client.get("/openapi.json").status_code == 200, "the document itself stays served"
