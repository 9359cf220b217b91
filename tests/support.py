"""Running livegate for real in a test: uvicorn in-process on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from livegate.server.realtime_route import PROTOCOL


@contextlib.asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and yield its base URL (`http://127.0.0.1:PORT`)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, ws=PROTOCOL,
                                           log_level="warning", lifespan="on", **config))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def refusal(connecting: Any) -> tuple[int, dict[str, Any]]:
    """A realtime refusal as a client sees it (README "Connecting"): the WebSocket opens, one `error`
    event says why, and the close code is 4000 + the HTTP status. Returns (that status, the error)."""
    import json

    from websockets.exceptions import ConnectionClosed

    async with connecting as ws:
        event = json.loads(await ws.recv())
        assert event["type"] == "error", event
        try:
            await ws.recv()
            raise AssertionError("a refused connection sends one error event, then closes")
        except ConnectionClosed:
            pass
        code = ws.close_code
    assert code is not None and 4400 <= code < 4600, code
    return code - 4000, event["error"]


async def collect(conn: Any, until: str = "response.done") -> list[Any]:
    """An openai SDK connection's events up to and including the first `until`; an error event fails."""
    events = []
    async for event in conn:
        events.append(event)
        if event.type == until:
            return events
        if event.type == "error":
            raise AssertionError(f"unexpected error event: {event.error}")
    raise AssertionError("connection closed before " + until)
