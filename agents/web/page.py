"""The live page at `/`: one HTML file with its script, style and icon, served from agents/web/static."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from faust.web import Request, Response, View

if TYPE_CHECKING:
    from faust import App

STATIC = Path(__file__).with_name("static")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page inserts event-derived label values; should one ever reach markup by mistake, the policy still
# forbids inline and foreign scripts, and everything the page needs comes from this worker.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Files are read once per worker start; no-cache makes a browser revalidate after an upgrade.
    "Cache-Control": "no-cache",
}


def static_files(folder: Path = STATIC) -> dict[str, tuple[bytes, str]]:
    """Read the servable files of a folder: file name -> (body, content type)."""
    return {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


def register(app: App) -> None:
    """Register `/` (the live page) and `/static/{name}` (its files) on the worker's web server."""
    # Read at start, served from memory: a fixed set of names also rules out path traversal.
    files = static_files()

    def serve(view: View, name: str) -> Response:
        found = files.get(name)
        if found is None:
            return view.text("not found\n", status=404)
        body, content_type = found
        # In the headers, not content_type=: aiohttp refuses a charset in that argument.
        return view.bytes(body, headers={"Content-Type": content_type, **SECURITY_HEADERS})

    @app.page("/")
    class LivePage(View):
        async def get(self, request: Request) -> Response:
            return serve(self, "index.html")

    @app.page("/static/{name}")
    class StaticFile(View):
        async def get(self, request: Request, name: str) -> Response:
            return serve(self, name)
