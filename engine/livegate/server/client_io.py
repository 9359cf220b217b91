"""Writing to a WebSocket client without letting one client hold the gateway.

- `send_within`: a write that a client which stopped reading cannot block forever. uvicorn applies
  backpressure (a send waits while the socket buffer is full), so memory stays bounded, but the wait has
  no end: after `timeout` seconds the client is taken as gone (`ClientStalled`).
- `abort_client`: drop such a client's TCP connection at once. A close frame cannot reach it (it would
  wait behind the unread data), and uvicorn would otherwise keep the socket until the peer reads.
- `fair_turn`: hand the event loop to other sessions between frames. Awaiting a socket that already
  has data buffered does not yield, so a relay loop fed by a fast peer would run for as long as the
  peer keeps ahead, and every other session (and `/health`) would wait.
- `ExposeTransportAbort`: the ASGI middleware that makes `abort_client` possible under uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import WebSocket

ABORT_KEY = "livegate.abort"
CLOSE_CLIENT_TOO_SLOW = 1008  # recorded in the session log; the frame itself cannot reach such a client


MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: the close frame's payload is 125 bytes, 2 of them the code


def close_reason(text: str) -> str:
    """A close reason within 123 bytes of UTF-8, cut at a character boundary (reasons put the cause
    first, so what is cut is detail)."""
    data = text.encode()
    return text if len(data) <= MAX_CLOSE_REASON_BYTES else data[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


class ClientStalled(Exception):
    """The client read nothing for the write timeout."""


async def send_within(ws: WebSocket, data: str | bytes, timeout: float) -> None:
    """Send one frame, raising ClientStalled if the client does not take it within `timeout` seconds.
    A client that went away raises what Starlette raises (WebSocketDisconnect, RuntimeError)."""
    try:
        async with asyncio.timeout(timeout):
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_text(data)
    except TimeoutError:
        raise ClientStalled(f"the client read nothing for {timeout:g} s") from None


def abort_client(ws: WebSocket) -> None:
    """Drop the client's connection without a closing handshake (uvicorn then reports a disconnect)."""
    abort = ws.scope.get(ABORT_KEY)
    if abort is not None:
        abort()


async def fair_turn() -> None:
    """Let every other ready task run once before going on."""
    await asyncio.sleep(0)


class ExposeTransportAbort:
    """Puts the connection's `transport.abort` into WebSocket scopes (under `ABORT_KEY`).

    ASGI offers no way to drop a connection whose peer stopped reading; uvicorn's `send` is a method of
    its protocol object, which owns the transport. Under another server the key is simply absent."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            abort = getattr(transport, "abort", None)
            if abort is not None:
                scope[ABORT_KEY] = abort
        await self.app(scope, receive, send)
