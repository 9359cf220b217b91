"""Test helpers that serve real things on 127.0.0.1: the livegate app under uvicorn (this module) and
Google's side of the wire (tests/fakes/google.py: OAuth token endpoint, credential files, TLS, REST).

    from livegate.config import parse_config
    from livegate.server import create_app
    from tests.fakes import serve_app

    async with serve_app(create_app(parse_config({...}), simulator_chunk_delay=0)) as served:
        async with websockets.connect(served.ws_url + "/v1/realtime?model=m") as ws: ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from livegate.server.realtime_route import PROTOCOL


@dataclass(frozen=True)
class ServedApp:
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """http(s)://127.0.0.1:PORT"""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """ws(s)://127.0.0.1:PORT"""
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serve_app(app: Any, *, certfile: str | Path | None = None, keyfile: str | Path | None = None,
                    start_timeout: float = 10.0) -> AsyncIterator[ServedApp]:
    """Run an ASGI app (lifespan included) under uvicorn on an ephemeral loopback port, TLS if a cert is given."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=PROTOCOL, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=2,
                            ssl_certfile=str(certfile) if certfile else None,
                            ssl_keyfile=str(keyfile) if keyfile else None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(start_timeout):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.005)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield ServedApp(port=port, tls=certfile is not None)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
