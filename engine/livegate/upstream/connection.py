"""The upstream WebSocket: open it for a target, send JSON, receive frames. No translation here.

`open_link` carries out the session core's OpenUpstream: connect, send `setup`, wait for Gemini's answer, send
the rest; a failure comes back as a typed UpstreamFailure (the core decides what the client is told).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from livegate.close_codes import ABNORMAL, NORMAL
from livegate.translation.commands import UpstreamFailure
from livegate.upstream.base import Provider, UpstreamTarget
from livegate.upstream.google_credentials import CredentialsError
from livegate.ws_frames import FrameReader, client_text, message_of, opened_at_frame

log = logging.getLogger("livegate.upstream")

# Gemini audio frames are small, but setup messages with many tools and inline audio items are not.
MAX_FRAME_BYTES = 32 * 1024 * 1024
# Longest wait for Gemini to answer our close frame (websockets' default is 10 s).
CLOSE_TIMEOUT = 2.0


async def close_promptly(ws: ClientConnection, code: int = NORMAL, reason: str = "") -> None:
    """Close an upstream WebSocket without waiting behind unread frames.

    A peer that was streaming fast has filled our receive buffer, and websockets stops reading from the
    socket until someone consumes it: its answer to our close frame would sit unread until the close
    timeout. Frames still arriving are discarded while the closing handshake completes."""

    async def discard() -> None:
        with contextlib.suppress(Exception):
            while True:
                await ws.recv()

    drain = asyncio.create_task(discard())
    try:
        await ws.close(code, reason)
    finally:
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain


class UpstreamError(Exception):
    """The upstream could not be reached or refused the connection. The message holds no secret; `status` is
    the HTTP status of a refused handshake."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# What to check when Google answers a WebSocket handshake with an HTTP error.
_STATUS_HINTS = {400: "check the model id and api_version", 401: "check the API key or the credentials",
                 403: "check the API key or the credentials and the project's access to the model",
                 404: "check the model id, api_version and api_base", 429: "quota exhausted?"}


def connect_failure(url: str, exc: BaseException, open_timeout: float) -> str:
    """Why a WebSocket to `url` could not be opened, naming the host and what to check (no secret: the
    query and headers are left out). Phrased for an operator reading the log and a client reading an error."""
    parts = urlsplit(url)
    default_port = 443 if parts.scheme in ("wss", "https") else 80
    host = parts.hostname or url
    where = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        hint = _STATUS_HINTS.get(status, "Google's service may be failing: retry later")
        return f"{where} refused the connection (HTTP {status}): {hint}"
    if isinstance(exc, socket.gaierror):
        return f"cannot reach {where}: the name does not resolve (no network? a typo in api_base?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot reach {where}: connection refused (nothing listening there: check api_base)"
    if isinstance(exc, TimeoutError):
        return f"cannot reach {where}: no answer within {open_timeout:g} s (no network? a firewall or proxy?)"
    if isinstance(exc, ssl.SSLError):
        return f"cannot reach {where}: TLS failed ({exc.reason or type(exc).__name__}; a proxy intercepting TLS?)"
    if isinstance(exc, InvalidHandshake):
        return f"{where} did not answer as a WebSocket server ({type(exc).__name__}): is api_base right?"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return f"cannot reach {where}: {reason}"


# Takes one whole message as it is read (text as str): True when taken, False to leave it for `recv`.
Receiver = Callable[[str | bytes], bool]
_DATA = (Opcode.TEXT, Opcode.BINARY)


class DeliveringConnection(ClientConnection):
    """websockets' client connection, which hands each whole message to a receiver (`deliver`) as soon as it
    is read, while no earlier frame waits for `recv`. A message otherwise goes through websockets' message
    queue to `recv`, which wakes the session's reading task for every frame. The whole data frames at the
    start of a read are parsed in place (ws_frames.FrameReader); the rest goes through websockets' parser. A
    receiver that declines (its session waits on a write) leaves the message to that queue, whose size pauses
    the reading as before."""

    deliver: Receiver | None = None
    _reader: FrameReader | None = None  # set once the handshake ended a read: frames parsed in place
    _framed = False  # a frame was read (before the reader was set)

    def data_received(self, data: bytes) -> None:
        reader, protocol = self._reader, self.protocol
        if reader is None:
            opening = protocol.state is State.CONNECTING
            super().data_received(data)
            if opening and protocol.state is State.OPEN and opened_at_frame(data, self._framed,
                                                                            protocol.reader.buffer):
                self._reader = FrameReader(masked=False, protocol=protocol)
            return
        may_take = not self.recv_messages.frames.queue and protocol.state is State.OPEN and not protocol.extensions
        if data := reader.read(data, self.deliver if may_take else None):
            super().data_received(data)

    def process_event(self, event: Event) -> None:  # an event websockets' parser read
        if type(event) is Frame:
            self._framed = True
            deliver = self.deliver
            if deliver is not None and event.fin and event.opcode in _DATA and not self.recv_messages.frames.queue:
                data = event.data if type(event.data) is bytes else bytes(event.data)
                message = message_of(data, text=event.opcode is Opcode.TEXT)  # (None: recv reports it, 1007)
                if message is not None and deliver(message):
                    return
        super().process_event(event)


class UpstreamConnection:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, target: UpstreamTarget, open_timeout: float = 10.0) -> UpstreamConnection:
        try:
            ws = await connect(target.url, additional_headers=target.headers, max_size=MAX_FRAME_BYTES,
                               # No permessage-deflate: base64 audio barely compresses, and deflate would cost
                               # CPU on every chunk (the client link is the same, see livegate_settings).
                               open_timeout=open_timeout, compression=None, ping_interval=20,
                               close_timeout=CLOSE_TIMEOUT, create_connection=DeliveringConnection)
        except (OSError, InvalidHandshake, TimeoutError) as exc:  # InvalidStatus is an InvalidHandshake
            problem = connect_failure(target.url, exc, open_timeout)
            log.warning("Gemini Live connection failed: %s", problem)  # an operator's problem, not a client's
            status = exc.response.status_code if isinstance(exc, InvalidStatus) else None
            raise UpstreamError(f"Gemini Live: {problem}", status) from None
        return cls(ws)

    def send_now(self, message: dict) -> bool:
        """Write a message at once when websockets' `send` would not wait: an open connection whose buffer is
        not full, no send in progress. False: nothing was written, `send` it."""
        ws = self._ws
        protocol = ws.protocol
        # (getattr: websockets' internals, as in 15-17; an older one without them takes its own `send`.)
        if getattr(ws, "send_in_progress", False) is not None or getattr(ws, "paused", True) is not False \
                or protocol.state is not State.OPEN or ws.transport.is_closing() \
                or protocol.extensions or protocol.writes or protocol.expect_continuation_frame:
            return False
        # What websockets' `send` does then, without the async context manager it enters for every frame and
        # its general framing: a text frame straight from orjson's UTF-8 bytes (ws_frames.py), written.
        try:
            ws.transport.write(client_text(orjson.dumps(message)))
        except Exception:  # (a transport that refuses a write: websockets' `send` reports how it closed)
            return False
        return True

    async def send(self, message: dict) -> None:
        if not self.send_now(message):
            await self._ws.send(orjson.dumps(message), text=True)

    def deliver_to(self, receiver: Receiver | None) -> None:
        """Hand Gemini's messages to `receiver` as they are read (None: stop); the ones it declines come
        from `recv`."""
        if isinstance(self._ws, DeliveringConnection):
            self._ws.deliver = receiver

    async def recv(self) -> str | bytes:
        """The next frame; raises ConnectionClosed when the upstream is gone."""
        return await self._ws.recv()

    def close_info(self, exc: ConnectionClosed) -> tuple[int, str]:
        frame = exc.rcvd or exc.sent
        return (frame.code, frame.reason) if frame else (ABNORMAL, "connection lost")

    async def close(self) -> None:
        await close_promptly(self._ws)


async def open_link(provider: Provider, setup: dict[str, Any], then: tuple[dict[str, Any], ...],
                    setup_timeout: float) -> tuple[UpstreamConnection, str | bytes] | UpstreamFailure:
    """A connection that answered `setup` (with its first frame) and was sent `then`, or why not."""
    conn: UpstreamConnection | None = None
    try:
        conn = await UpstreamConnection.open(await provider.target())
        await conn.send(setup)
        async with asyncio.timeout(setup_timeout):
            first = await conn.recv()
        for message in then:
            await conn.send(message)
        return conn, first
    except UpstreamError as exc:
        failure = UpstreamFailure("unreachable", str(exc), status=exc.status)
    except ConnectionClosed as exc:
        code, reason = conn.close_info(exc) if conn is not None else (ABNORMAL, "")
        failure = UpstreamFailure("closed", code=code, reason=reason)
    except TimeoutError:
        failure = UpstreamFailure("timeout")
    except CredentialsError as exc:  # its message names the problem, never a secret
        failure = UpstreamFailure("credentials", str(exc))
    except Exception as exc:  # other provider failures: no details to the client
        failure = UpstreamFailure("other", type(exc).__name__)
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()
    return failure
