"""Writing to a WebSocket client without letting one client hold the gateway.

- `ClientLink`: the client's side of a session as its pump writes it: events in order, each write with a
  deadline, a client that stopped reading dropped, events held for a client that may come back (reattach).
  It uses no more of the socket than `receive`, `send_text` and `close`, so any WebSocket-like adapter fits.
- `send_within`: a write that a client which stopped reading cannot block forever. uvicorn applies
  backpressure (a send waits while the socket buffer is full), so memory stays bounded, but the wait has
  no end: after `timeout` seconds the client is taken as gone (`ClientStalled`). A write into a transport
  with nothing buffered cannot wait (flow control pauses only a full buffer), so it goes out without the
  deadline, whose timer would be armed and cancelled for every event for nothing. (Were that ever wrong, the
  wait would still end: uvicorn's keepalive pings close a connection that does not answer.)
- `abort_client`: drop such a client's TCP connection at once. A close frame cannot reach it (it would
  wait behind the unread data), and uvicorn would otherwise keep the socket until the peer reads.
- `FairShare`: a read loop hands the event loop to other sessions once it has spent a millisecond on its
  frames. Awaiting a socket that already has data buffered does not yield, so a loop fed by a fast peer
  would run for as long as the peer keeps ahead, and every other session (and `/health`) would wait.
  Handing over after every frame instead cost an extra event loop iteration per frame: about a tenth of an
  audio chunk's whole round trip through the gateway.
- `ExposeTransportAbort`: the ASGI middleware that makes `abort_client` (and the buffer check) possible under
  uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from livegate.close_codes import CLIENT_TOO_SLOW, NORMAL, RETRIED_BY_OPENAI_SDK, close_reason

ABORT_KEY = "livegate.abort"
TRANSPORT_KEY = "livegate.transport"  # the connection's asyncio transport, for its write buffer's size
MAX_HELD_CLIENT_EVENTS = 5000  # events for a detached client, oldest dropped beyond
CLIENT_LEFT = "client disconnected"

log = logging.getLogger("livegate.session")


class ClientStalled(Exception):
    """The client read nothing for the write timeout."""


async def send_within(ws: Any, data: str | bytes, timeout: float) -> None:
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


def abort_client(ws: Any) -> None:
    """Drop the client's connection without a closing handshake (uvicorn then reports a disconnect)."""
    abort = getattr(ws, "scope", {}).get(ABORT_KEY)
    if abort is not None:
        abort()


FAIR_SHARE_S = 0.001  # the time a read loop spends on its frames before it lets every other ready task run


class FairShare:
    """One reader's share of the event loop: `turn` after each frame its loop read, with the time its
    handling began; `spent` after each frame handed over as it was read (`deliver_to`), which is declined
    once `spent` (the loop then reads it, and its turn comes)."""

    __slots__ = ("_budget", "_busy")

    def __init__(self, budget_s: float = FAIR_SHARE_S) -> None:
        self._budget = budget_s
        self._busy = 0.0

    @property
    def due(self) -> bool:
        """The reader took its budget since its last turn."""
        return self._busy >= self._budget

    def spent(self, started: float) -> None:
        """A frame whose handling began at `started` (time.perf_counter()) is done."""
        self._busy += time.perf_counter() - started

    async def turn(self, started: float) -> None:
        """A frame the loop read, whose handling began at `started`, is done: once the reader's frames took
        `budget_s` since its last turn, every other ready task runs once before it goes on."""
        self._busy += time.perf_counter() - started
        if self._busy >= self._budget:
            self._busy = 0.0
            await asyncio.sleep(0)


class ClientLink:
    """One client connection of a session, which a reattaching client may replace (`come_back`)."""

    def __init__(self, ws: Any, write_timeout: float, reattach_grace_s: float = 0.0) -> None:
        self.ws = ws
        self._transport = _transport_of(ws)
        self._write_now = getattr(ws, "write_now", None)  # several events in one write (SessionSocket)
        self.write_timeout = write_timeout
        self.reattach_grace_s = reattach_grace_s
        self.ended: tuple[int, str] | None = None  # how the client's connection ended: (close code, reason)
        self.away = False  # its connection dropped: events are held for a reattach
        self.reattaches = 0
        self._gone = False  # writes fail and no reattach is possible: events are dropped
        self._held: list[str] = []
        self._lock = asyncio.Lock()
        self._back = asyncio.Event()
        self._released: asyncio.Future[None] | None = None  # resolved when the session is done with a `ws`

    async def receive(self) -> str | bytes | None:
        """The client's next frame (OpenAI clients send text; JSON in a binary frame is accepted too), or None
        once its connection ended."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.left(message.get("code", NORMAL))
                return None
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes")
            if frame is not None:
                return frame

    def deliver_to(self, receiver: Callable[[str | bytes], bool] | None) -> None:
        """Hand the client's frames to `receiver` as they are read where the socket can (SessionSocket under
        livegate's uvicorn protocol); the frames it declines, and all under any other server, come from
        `receive`. None: stop."""
        deliver = getattr(self.ws, "deliver_to", None)
        if deliver is not None:
            deliver(receiver)

    def send_now(self, messages: list[dict[str, Any] | str]) -> bool:
        """Write events at once, in one write, when nothing can hold them up: no send in progress, nothing
        buffered, a socket that writes synchronously (SessionSocket.write_now). False: nothing was written,
        `send` them. A failed write counts as done: the events are held for a reattach, or dropped."""
        if self._write_now is None or self._lock.locked() or self._gone or self.away or not self._idle():
            return False
        texts = _texts(messages)
        try:
            return self._write_now(texts)
        except Exception:
            self._lost(texts)
            return True

    async def send(self, messages: list[dict[str, Any] | str]) -> None:
        """Send events (dicts, or JSON text already) in order. Never raises: a client that stopped reading is
        dropped (1008), one that is gone is held for (with a reattach grace period) or dropped; the receiving
        side sees the end. (The pump tries `send_now` first.)"""
        async with self._lock:
            texts = _texts(messages)
            for index, text in enumerate(texts):
                if self._gone:
                    return
                if self.away:
                    self._hold(text)
                    continue
                try:
                    if self._idle():
                        await self.ws.send_text(text)  # nothing buffered: this write cannot wait
                    else:
                        await send_within(self.ws, text, self.write_timeout)
                except ClientStalled as exc:  # connected but not reading: dropped, never reattached
                    log.info("dropping a client that stopped reading: %s", exc)
                    abort_client(self.ws)
                    self.ended = self.ended or (CLIENT_TOO_SLOW, str(exc))
                    self._gone = True
                except Exception:
                    self._lost(texts[index:index + 1])

    def _idle(self) -> bool:
        """Nothing waits in the client connection's write buffer (known only under uvicorn)."""
        return self._transport is not None and not self._transport.get_write_buffer_size()

    def _lost(self, texts: list[str]) -> None:
        """Writing `texts` failed: the client is gone; they are held for a reattach when one may come."""
        if self.reattach_grace_s <= 0:
            self._gone = True
        else:
            self.away = True  # the client loop decides: reattach or end
            for text in texts:
                self._hold(text)

    def left(self, code: int) -> None:
        """The client's connection ended (a disconnect with `code`)."""
        self.ended = self.ended or (code, CLIENT_LEFT)

    async def close(self, code: int, reason: str) -> None:
        """Close the client's connection; a close frame waits like any write, then the client is aborted."""
        if self.ended is not None:
            return
        self.ended = (code, reason)
        self._back.set()  # a session waiting for its client to come back ends now
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.ws.close(code=code, reason=close_reason(reason))
        except TimeoutError:
            abort_client(self.ws)
        except Exception:
            pass

    # -- reattach ----------------------------------------------------------------------------------

    async def wait_for_return(self, registry: dict[str, Any] | None, session_id: str | None, session: Any,
                              away: Callable[[bool], None] | None = None) -> bool:
        """After the client's connection dropped in a way the openai SDK retries: keep the session (listed in
        `registry` under `session_id`) for the grace period, for the client to take it over (`?session_id=`).
        True when it did; the events it missed are sent first. `away` hears when the wait starts (True) and
        when the client is back (False)."""
        self.release()
        ended = self.ended
        if (registry is None or not session_id or self.reattach_grace_s <= 0 or ended is None
                or ended[1] != CLIENT_LEFT or ended[0] not in RETRIED_BY_OPENAI_SDK):
            return False
        log.info("client connection dropped (%s); keeping the session %.0f s for a reattach", ended[0],
                 self.reattach_grace_s)
        self.away, self.ended, self._gone = True, None, False
        self._back.clear()
        registry[session_id] = session
        if away is not None:
            away(True)
        try:
            async with asyncio.timeout(self.reattach_grace_s):
                await self._back.wait()
        except TimeoutError:
            self.ended = (ended[0], "client did not reattach")
            return False
        finally:
            registry.pop(session_id, None)
        if self.ended is not None:  # the session ended while the client was away
            return False
        if away is not None:
            away(False)
        async with self._lock:
            held, self._held = self._held, []
            try:
                for text in held:
                    await send_within(self.ws, text, self.write_timeout)
            except Exception:
                self._gone = True
            self.away = False
        self.reattaches += 1
        return True

    async def send_frames(self, frames: list[str]) -> None:
        """Send already-encoded events first (those a client taken over from another instance missed)."""
        async with self._lock:
            try:
                for text in frames:
                    await send_within(self.ws, text, self.write_timeout)
            except Exception:
                self._gone = True

    def held_frames(self) -> list[str] | None:
        """The events held for a client that is away (None when it is connected)."""
        return list(self._held) if self.away else None

    async def come_back(self, ws: Any) -> None:
        """A reconnecting client takes the session over; returns when the session is done with `ws`."""
        self._released = asyncio.get_running_loop().create_future()
        self.ws = ws
        self._transport = _transport_of(ws)
        self._write_now = getattr(ws, "write_now", None)
        self._back.set()
        await self._released

    def release(self) -> None:
        """The session is done with the current socket (a reattached client's handler may return)."""
        if self._released is not None and not self._released.done():
            self._released.set_result(None)

    def _hold(self, text: str) -> None:
        self._held.append(text)
        if len(self._held) > MAX_HELD_CLIENT_EVENTS:
            del self._held[0]


def _texts(messages: list[dict[str, Any] | str]) -> list[str]:
    return [message if isinstance(message, str) else orjson.dumps(message).decode() for message in messages]


def _transport_of(ws: Any) -> Any:
    """The client connection's transport, when the server exposed one (ExposeTransportAbort)."""
    transport = getattr(ws, "scope", {}).get(TRANSPORT_KEY)
    return transport if callable(getattr(transport, "get_write_buffer_size", None)) else None


class ExposeTransportAbort:
    """Puts the connection's `transport.abort` into WebSocket scopes (under `ABORT_KEY`), and the transport
    itself (under `TRANSPORT_KEY`).

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
                scope[TRANSPORT_KEY] = transport
        await self.app(scope, receive, send)
