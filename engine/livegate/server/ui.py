"""The admin page at /ui: static files served by livegate (no build step, no CDN). The page asks for the
master key and calls the management API with it; the files themselves hold nothing secret. A strict
Content-Security-Policy keeps the page to this gateway's own scripts and API."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

UI_DIR = Path(__file__).parent / "static" / "ui"
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "app.css": "text/css; charset=utf-8"}
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def add_ui_routes(app: FastAPI) -> None:
    async def page(name: str = "index.html") -> Response:
        if name not in FILES:
            return Response("Not found", status_code=404, media_type="text/plain")
        return Response((UI_DIR / name).read_bytes(), media_type=FILES[name], headers=HEADERS)

    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    app.add_api_route("/ui", root, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/", page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/ui/{name}", page, methods=["GET"], include_in_schema=False)
