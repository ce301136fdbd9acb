"""The live page's files and views: what is served, that it references nothing outside the worker, and
that its script never turns API text into markup."""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from agents.web import page

STABLE_IDS = {
    "orders-per-hour",
    "revenue-today",
    "error-rate",
    "p95",
    "rps",
    "stock-outs",
    "health",
    "chart",
    "alerts",
    "silences",
    "silence-form",
    "token",
    "worker",
}


class _Refs(HTMLParser):
    """Collects every id and every src/href of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href") and value is not None:
                self.refs.append(value)


def _index() -> _Refs:
    parser = _Refs()
    parser.feed(page.static_files()["index.html"][0].decode())
    return parser


def test_the_static_folder_holds_the_page_and_its_files_with_their_types() -> None:
    files = page.static_files()
    assert set(files) == {"index.html", "page.js", "page.css", "favicon.svg"}
    assert files["index.html"][1] == "text/html; charset=utf-8"
    assert files["page.js"][1] == "text/javascript; charset=utf-8"
    assert files["page.css"][1] == "text/css; charset=utf-8"
    assert files["favicon.svg"][1] == "image/svg+xml"


def test_the_page_references_only_its_own_files_and_anchors() -> None:
    index = _index()
    served = set(page.static_files())
    assert index.refs
    for ref in index.refs:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc, ref
        if ref.startswith("#"):
            assert ref[1:] in index.ids, ref
        else:
            assert ref.startswith("static/") and ref.removeprefix("static/") in served, ref
    css = page.static_files()["page.css"][0].decode()
    assert "url(" not in css and "@import" not in css


def test_the_page_has_the_stable_ids_tests_and_users_rely_on() -> None:
    assert _index().ids >= STABLE_IDS


def test_the_script_never_builds_markup_from_strings() -> None:
    script = page.static_files()["page.js"][0].decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    # Relative API paths only, so a proxy may mount the worker under a path.
    paths = re.findall(r'api\("(?:GET|POST|DELETE)", "([^"]*)"', script)
    paths += re.findall(r'const SERIES = "([^"]*)"', script)
    assert "api/v1/silences" in paths
    assert any(path.startswith("api/v1/series?scope=cluster&") for path in paths), paths  # the whole cluster
    assert all(not path.startswith("/") and not urlsplit(path).scheme for path in paths), paths


async def _get_all(paths: list[str]) -> list[tuple[int, str, str, bytes]]:
    import faust
    from aiohttp.test_utils import TestClient, TestServer

    app = faust.App("page-test", broker="kafka://127.0.0.1:1", web_enabled=True)
    page.register(app)
    app.web.init_server()  # adds Faust's own blueprints, among them an index at "/"
    out = []
    async with TestClient(TestServer(app.web.web_app, host="127.0.0.1")) as client:
        for path in paths:
            reply = await client.get(path)
            body = await reply.read()
            policy = reply.headers.get("Content-Security-Policy", "")
            out.append((reply.status, reply.headers.get("Content-Type", ""), policy, body))
    return out


def test_the_views_serve_the_page_files_and_nothing_else() -> None:
    paths = ["/", "/static/page.js", "/static/page.css", "/static/missing.js", "/static/..%2Fpage.py"]
    root, script, style, missing, traversal = asyncio.run(_get_all(paths))
    files = page.static_files()
    assert root[:2] == (200, "text/html; charset=utf-8") and root[3] == files["index.html"][0]
    assert "script-src 'self'" in root[2] and "default-src 'none'" in root[2]
    assert script[:2] == (200, "text/javascript; charset=utf-8") and script[3] == files["page.js"][0]
    assert style[:2] == (200, "text/css; charset=utf-8")
    assert missing[0] == 404 and traversal[0] == 404
