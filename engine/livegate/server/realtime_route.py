"""`/v1/realtime` as a plain ASGI route, in front of FastAPI's router.

A session moves about a hundred frames a second for as long as it lasts. Under a FastAPI route every one of
them crosses Starlette's WebSocket state machine and the exception middleware's `send` wrapper; here the
handshake still uses Starlette's `WebSocket` (the same headers, query parameters, accept, refusals and close
codes as any route), and once the socket is accepted the session reads and writes ASGI messages directly
(`SessionSocket`). Under uvicorn's websockets-sansio protocol (the one livegate serves with) a text frame
is written to the connection directly while it is open and writable; in every other state the ASGI `send`
decides, as for any app.

Everything that is not a WebSocket on one of the realtime paths goes on to the FastAPI app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

# The realtime handler: the handshake WebSocket, and the socket the session reads and writes once accepted.
Handler = Callable[[WebSocket, "SessionSocket"], Awaitable[None]]


class SessionSocket:
    """An accepted WebSocket as a realtime session uses it (RealtimeSession, ClientLink): `receive`,
    `send_text`, `send_bytes`, `close` and `scope`, each one ASGI message, without Starlette's bookkeeping.

    uvicorn checks the message order itself (a send after a close raises), and the session reads until the
    disconnect message and stops, so nothing here needs to track the connection's state."""

    __slots__ = ("_send", "_write_frame", "receive", "scope")

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                 send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self._write_frame = _frame_writer(send)

    async def send_text(self, data: str) -> None:
        if self._write_frame is None or not self._write_frame(data):
            await self._send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason or ""})


def _frame_writer(send: Any) -> Callable[[str], bool] | None:
    """When `send` is a method of uvicorn's websockets-sansio protocol: a function that frames a text message
    and writes it to the transport, as that `send` does for an open connection that may write, without the
    coroutine, the awaited `writable` event and the ASGI message around it; it returns False (write nothing)
    in any other state, where the ASGI `send` decides (it waits, or raises for a closed connection), and
    raises for a connection the peer reset that uvicorn has not yet seen end."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:
        return None
    protocol = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    conn = protocol.conn

    def write(data: str) -> bool:
        if not protocol.handshake_complete or protocol.close_sent or protocol.disconnected \
                or protocol.initial_response is not None or not protocol.writable.is_set():
            return False
        if protocol.transport.is_closing():  # the peer reset it, and uvicorn has not heard yet: the frame is
            raise ConnectionResetError("the client's connection is closing")  # not sent (the caller holds it)
        try:
            conn.send_text(data.encode())
        except Exception:  # websockets' InvalidState: closing; the ASGI send raises uvicorn's own error
            return False
        protocol.transport.write(b"".join(conn.data_to_send()))
        return True

    return write


class RealtimeRoute:
    """ASGI middleware: WebSockets on `paths` go to `handler`; every other request to `app`."""

    def __init__(self, app: Any, *, paths: frozenset[str], handler: Handler) -> None:
        self.app = app
        self.paths = paths
        self.handler = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and _route_path(scope) in self.paths:
            await self.handler(WebSocket(scope, receive, send), SessionSocket(scope, receive, send))
            return
        await self.app(scope, receive, send)


def _route_path(scope: dict[str, Any]) -> str:
    """The path a router matches: without the app's root_path, as Starlette's routing reads it."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path
