"""Native passthrough routes: Gemini Live over WebSocket (Vertex AI and AI Studio) and Vertex AI REST.

Clients speak Google's own protocols; livegate authenticates them with livegate keys, injects Google
credentials, enforces the model list and records usage. See live.py and rest.py for routes and codes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response, WebSocket

from livegate.server.passthrough.live import AISTUDIO_PATHS, VERTEX_PATHS, live_passthrough
from livegate.server.passthrough.rest import METHODS, PREFIXES, RestPassthrough

if TYPE_CHECKING:
    from livegate.server.app import Gateway

__all__ = ["add_passthrough_routes"]


def add_passthrough_routes(app: FastAPI, gateway: Gateway) -> None:
    """Mount the passthrough routes on `app` (call before the app starts)."""

    async def vertex_live(ws: WebSocket, suffix: str = "") -> None:
        await live_passthrough(ws, gateway, "vertex", suffix)

    async def gemini_live(ws: WebSocket, suffix: str = "") -> None:
        await live_passthrough(ws, gateway, "aistudio", suffix)

    for paths, endpoint in ((VERTEX_PATHS, vertex_live), (AISTUDIO_PATHS, gemini_live)):
        for path in paths:
            app.add_api_websocket_route(path, endpoint)
            app.add_api_websocket_route(path + "/{suffix:path}", endpoint)  # google-genai appends its method path

    rest = RestPassthrough(gateway)

    async def vertex_rest(request: Request) -> Response:
        return await rest.handle(request)

    async def discovery_rest(request: Request) -> Response:
        return await rest.handle(request, discovery=True)

    for prefix in PREFIXES:  # discovery first: the catch-all would take it otherwise
        app.add_api_route(prefix + "/discovery/{path:path}", discovery_rest, methods=METHODS, include_in_schema=False)
        app.add_api_route(prefix + "/{path:path}", vertex_rest, methods=METHODS, include_in_schema=False)

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            try:
                yield state
            finally:
                await rest.aclose()  # the pooled connections to Google

    app.router.lifespan_context = lifespan
