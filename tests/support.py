"""Running livegate for real in a test: uvicorn in-process on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


@contextlib.asynccontextmanager
async def serve(app: Any, **config: Any) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 and yield its base URL (`http://127.0.0.1:PORT`)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, ws="websockets-sansio",
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
