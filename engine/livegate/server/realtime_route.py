"""`/v1/realtime` as a plain ASGI route, in front of FastAPI's router.

A session moves about a hundred frames a second for as long as it lasts. Under a FastAPI route every one of
them crosses Starlette's WebSocket state machine and the exception middleware's `send` wrapper; here the
handshake still uses Starlette's `WebSocket` (the same headers, query parameters, accept, refusals and close
codes as any route), and once the socket is accepted the session reads and writes ASGI messages directly
(`SessionSocket`). Under livegate's own uvicorn protocol (`DeliveringProtocol`, websockets-sansio that can
hand a message to the session as it is read) the events of one output are framed (ws_frames.py) and written
to the connection in one write while it is open and writable; in every other state the ASGI `send` decides,
as for any app.

Everything that is not a WebSocket on one of the realtime paths goes on to the FastAPI app unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from livegate.ws_frames import FrameReader, message_of, opened_at_frame, server_text

# The realtime handler: the handshake WebSocket, and the socket the session reads and writes once accepted.
Handler = Callable[[WebSocket, "SessionSocket"], Awaitable[None]]
# Takes one whole message as it is read (text as str): True when taken, False to queue it for `receive`.
Receiver = Callable[[str | bytes], bool]

PROTOCOL = "livegate.server.realtime_route:DeliveringProtocol"  # uvicorn's `ws` option, as livegate serves


class DeliveringProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, which hands each message to a receiver the session registered
    (`SessionSocket.deliver_to`) as soon as it is read, while nothing waits in the ASGI queue before it.

    A message otherwise goes through an asyncio queue to the app's `receive`, which wakes the session's task,
    and uvicorn pauses and resumes the socket's reading around every message: two system calls and a task
    switch per frame. The whole data frames at the start of a read are parsed in place (ws_frames.FrameReader);
    the rest goes through websockets' parser. A receiver that declines (its session is waiting on a write)
    leaves the message to that queue, with its pause, so the order and the backpressure stay uvicorn's."""

    deliver: Receiver | None = None
    _reader: FrameReader | None = None  # set once the handshake ended a read: frames parsed in place

    def data_received(self, data: bytes) -> None:
        reader, conn = self._reader, self.conn
        if reader is None:
            opening = not self.handshake_initiated
            super().data_received(data)
            if opening and self.handshake_initiated and opened_at_frame(data, self.queue.qsize() != 1,
                                                                        conn.reader.buffer):
                self._reader = FrameReader(masked=True, protocol=conn)
            return
        may_take = self.queue.empty() and not self.close_sent and conn.state is State.OPEN and not conn.extensions
        if data := reader.read(data, self.deliver if may_take else None):
            super().data_received(data)

    def send_receive_event_to_app(self) -> None:  # a message websockets' parser read
        deliver = self.deliver
        if deliver is not None and len(self.frames) == 1 and not self.close_sent and self.queue.empty():
            message = message_of(self.frames[0], text=self.curr_msg_data_type == "text")
            if message is not None and deliver(message):
                self.frames = []
                return
        super().send_receive_event_to_app()


class SessionSocket:
    """An accepted WebSocket as a realtime session uses it (RealtimeSession, ClientLink): `receive`,
    `send_text`, `send_bytes`, `close` and `scope`, each one ASGI message, without Starlette's bookkeeping;
    `write_now`, several events in one write while the connection is open and writable; and `deliver_to`,
    the client's messages handed over as they are read.

    uvicorn checks the message order itself (a send after a close raises), and the session reads until the
    disconnect message and stops, so nothing here needs to track the connection's state."""

    __slots__ = ("_protocol", "_send", "receive", "scope", "write_now")

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                 send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.write_now = _frames_writer(send)
        protocol = getattr(send, "__self__", None)
        self._protocol = protocol if isinstance(protocol, DeliveringProtocol) else None

    def deliver_to(self, receiver: Receiver | None) -> bool:
        """Hand the client's messages to `receiver` as they are read (None: stop); False when the server's
        protocol cannot (every message then comes from `receive`)."""
        if self._protocol is None:
            return False
        self._protocol.deliver = receiver
        return True

    async def send_text(self, data: str) -> None:
        if self.write_now is None or not self.write_now((data,)):
            await self._send({"type": "websocket.send", "text": data})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason or ""})


WriteNow = Callable[[Sequence[str]], bool]


def _frames_writer(send: Any) -> WriteNow | None:
    """When `send` is a method of uvicorn's websockets-sansio protocol: a function that writes text messages
    to the transport, framed, in one write (an output's events, e.g. the eleven of a turn's end, in one
    system call and one TCP segment), as that `send` would one by one for an open connection that may write,
    without the coroutine, the awaited `writable` event and the ASGI message around each. It returns False
    (writes nothing) in any other state, where the ASGI `send` decides (it waits, or raises for a closed
    connection), and raises for a connection the peer reset that uvicorn has not yet seen end."""
    protocol = getattr(send, "__self__", None)
    if not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    conn = protocol.conn

    def write(texts: Sequence[str]) -> bool:
        if not protocol.handshake_complete or protocol.close_sent or protocol.disconnected \
                or protocol.initial_response is not None or not protocol.writable.is_set() \
                or conn.state is not State.OPEN:
            return False
        if protocol.transport.is_closing():  # the peer reset it, and uvicorn has not heard yet: the frames are
            raise ConnectionResetError("the client's connection is closing")  # not sent (the caller holds them)
        if conn.extensions or conn.writes:  # permessage-deflate, or something websockets has not written yet:
            for text in texts:  # its own framing, in order
                conn.send_text(text.encode())
            protocol.transport.write(b"".join(conn.data_to_send()))
        else:
            protocol.transport.write(b"".join([server_text(text.encode()) for text in texts]))
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
