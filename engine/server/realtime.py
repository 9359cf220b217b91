"""`/v1/realtime`: one OpenAI Realtime client, one translator, one Gemini Live connection.

The pump is thin on purpose: it moves frames between the sockets and the translator and owns the
timing the translator cannot (connect, the idle timer, closes).

Gemini is contacted when the first content arrives (the translator emits `setup` then), because
Gemini's configuration is fixed by that one message. Close codes sent to the client:
    1000  the session ended normally (client or Gemini closed cleanly)
    1011  an internal livegate error
    1014  Gemini could not be reached, refused the connection, closed it abnormally (bad gateway), or
          stalled: sent nothing for `upstream_stall_timeout_s` in the middle of a turn (an `error` first)
    1008  the client read nothing for `client_write_timeout_s` (its connection is dropped; the code is
          what the session log records, as the close frame cannot reach such a client)
    4008, 4010, 4029  accounting stopped the session (engine/accounting/gate.py), after an `error` event

Robustness: relay loops hand the event loop to other sessions after every frame (a flooding peer
cannot starve the gateway), and writes to the client have a deadline (client_io.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState
from websockets.exceptions import ConnectionClosed

from livegate.accounting.gate import Grant
from livegate.config import Timeouts
from livegate.server.client_io import CLOSE_CLIENT_TOO_SLOW, ClientStalled, abort_client, fair_turn, send_within
from livegate.translator import Output, Translator
from livegate.upstream.base import Provider
from livegate.upstream.connection import UpstreamConnection, UpstreamError
from livegate.upstream.google_credentials import CredentialsError

log = logging.getLogger("livegate.session")

CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011
CLOSE_BAD_GATEWAY = 1014


class RealtimeSession:
    def __init__(self, ws: WebSocket, translator: Translator, provider: Provider, model: str,
                 timeouts: Timeouts | None = None, grant: Grant | None = None) -> None:
        self.grant = grant  # accounting: usage, cost, limits (None: not metered)
        self.ws = ws
        self.timeouts = timeouts or Timeouts()
        self._stall = _StallClock()
        self.translator = translator
        self.provider = provider
        self.model = model
        self.upstream: UpstreamConnection | None = None
        self._send_lock = asyncio.Lock()
        self._upstream_task: asyncio.Task[None] | None = None
        self._closed: tuple[int, str] | None = None
        self.started = time.monotonic()

    async def run(self) -> None:
        enforcer = asyncio.create_task(self._enforce_limits()) if self.grant else None
        try:
            await self.deliver(self.translator.start())
            fixed = self.grant.fixed_session(self.translator.dialect) if self.grant is not None else None
            if fixed:  # a client secret's session applies from the start
                await self.deliver(self.translator.from_client({"type": "session.update", "session": fixed}))
            await self._client_loop()
        except WebSocketDisconnect:
            self._closed = self._closed or (CLOSE_NORMAL, "client disconnected")
        except Exception as exc:
            if not self._client_gone(exc):
                log.exception("session failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            if self._upstream_task is not None:
                self._upstream_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._upstream_task
            if self.upstream is not None:
                with contextlib.suppress(Exception):
                    await self.upstream.close()
            self._log_end()
            if enforcer is not None:
                enforcer.cancel()
            if self.grant is not None:
                code, reason = self._closed or (CLOSE_NORMAL, "")
                await self.grant.finish(code, "success" if code == CLOSE_NORMAL else "failure", reason)

    async def _enforce_limits(self) -> None:
        """Budget spent, key deleted or expired, maximum duration: an `error` event, then the close code."""
        assert self.grant is not None
        stop = await self.grant.wait_stopped()
        await self.deliver(self.translator.server_error(stop.message, stop.code))
        await self._close_client(stop.close_code, stop.message)

    async def _client_loop(self) -> None:
        while self._closed is None:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self._closed = self._closed or (message.get("code", CLOSE_NORMAL), "client disconnected")
                return
            frame = message.get("text")
            if frame is None and message.get("bytes") is not None:
                frame = message["bytes"]  # OpenAI clients send text; JSON in a binary frame is accepted too
            if frame is None:
                continue
            if self.grant is not None:
                self.grant.client_frame(frame)
                frame = self.grant.fix_client_frame(frame, self.translator.dialect)
            await self.deliver(self.translator.from_client(frame))
            await fair_turn()

    async def deliver(self, out: Output) -> None:
        """Send an Output: client messages first (they are confirmations), then Gemini's."""
        if out.client:
            if self.grant is not None:
                self.grant.client_messages(out.client)
            async with self._send_lock:
                for message in out.client:
                    await send_within(self.ws, orjson.dumps(message).decode(), self.timeouts.client_write_s)
        if not out.upstream or (self.grant is not None and self.grant.stop is not None):
            return  # nothing more reaches Gemini once accounting has stopped the session
        messages = out.upstream
        if self.upstream is None:
            if self._closed is not None:
                return
            opened = await self._open_upstream(messages)
            if opened is None or self.upstream is None:
                return
            messages = opened
        for message in messages:
            try:
                await self.upstream.send(message)
            except ConnectionClosed:
                return  # the upstream reader reports the close
        self._stall.sent(_turn_pending(self.translator.session))

    async def _open_upstream(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Connect, send `setup`, wait for setupComplete; returns the messages still to send."""
        setup, rest = messages[0], messages[1:]
        if "setup" not in setup:
            raise RuntimeError("the first upstream message of a session must be setup")
        try:
            connecting = time.monotonic()
            target = await self.provider.target()
            self.upstream = await UpstreamConnection.open(target)
            await self.upstream.send(setup)
            async with asyncio.timeout(self.timeouts.upstream_setup_s):
                first = await self.upstream.recv()
            if self.grant is not None:
                self.grant.upstream_connected(time.monotonic() - connecting)
        except UpstreamError as exc:
            await self._fail(str(exc), "upstream_unavailable")
            return None
        except ConnectionClosed as exc:
            code, reason = self.upstream.close_info(exc) if self.upstream else (1006, "")
            await self._upstream_closed(code, reason)
            return None
        except TimeoutError:
            await self._fail("Gemini Live did not answer the session setup in time.", "upstream_timeout")
            return None
        except CredentialsError as exc:  # its message names the problem, never a secret
            await self._fail(f"livegate could not authenticate to Gemini Live: {exc}", "upstream_auth_failed")
            return None
        except Exception as exc:  # other provider failures: no details to the client
            log.warning("could not open the upstream: %s", type(exc).__name__)
            await self._fail("livegate could not open the Gemini Live session.", "upstream_unavailable")
            return None
        await self.deliver(self.translator.from_upstream(first))
        self._upstream_task = asyncio.create_task(self._upstream_loop())
        return rest

    async def _upstream_loop(self) -> None:
        try:
            await self._pump_upstream()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave the client waiting on a reader that died
            if self._client_gone(exc, record=False):  # the client loop records the client's own close code
                return
            log.exception("upstream reader failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")

    async def _pump_upstream(self) -> None:
        assert self.upstream is not None
        while True:
            idle = self.translator.idle_timeout
            stall = self._stall.remaining(self.timeouts.upstream_stall_s)
            timeout = min(t for t in (idle, stall) if t is not None) if idle or stall else None
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a frame that arrives together
                # with a cancellation and drops the cancellation, so the session's end would wait forever.
                async with asyncio.timeout(timeout):
                    frame = await self.upstream.recv()
            except TimeoutError:
                if self._stall.stalled(self.timeouts.upstream_stall_s, _turn_pending(self.translator.session)):
                    await self._fail(f"Gemini Live sent nothing for {self.timeouts.upstream_stall_s:g} s in the "
                                     "middle of a turn.", "upstream_timeout")
                    return
                if idle is not None and timeout == idle:
                    await self.deliver(self.translator.upstream_idle())
                continue
            except ConnectionClosed as exc:
                await self._upstream_closed(*self.upstream.close_info(exc))
                return
            if self.grant is not None:
                self.grant.upstream_frame(frame)
            await self.deliver(self.translator.from_upstream(frame))
            self._stall.received(_turn_pending(self.translator.session))
            await fair_turn()

    async def _upstream_closed(self, code: int, reason: str) -> None:
        await self.deliver(self.translator.upstream_closed(code, reason))
        if code == CLOSE_NORMAL:
            await self._close_client(CLOSE_NORMAL, "Gemini Live ended the session")
        else:
            await self._close_client(CLOSE_BAD_GATEWAY, f"Gemini Live closed the session ({code})")

    async def _fail(self, message: str, code: str) -> None:
        await self.deliver(self.translator.server_error(message, code))
        await self._close_client(CLOSE_BAD_GATEWAY, message[:120])

    async def _close_client(self, code: int, reason: str) -> None:
        if self._closed is None:
            self._closed = (code, reason)
            try:
                async with asyncio.timeout(self.timeouts.client_write_s):  # a close frame waits like any write
                    await self.ws.close(code=code, reason=reason[:120])
            except TimeoutError:
                abort_client(self.ws)
            except Exception:
                pass

    def _client_gone(self, exc: BaseException, record: bool = True) -> bool:
        """If `exc` says the client is gone or stopped reading, record it (at info) and return True."""
        if isinstance(exc, ClientStalled):
            log.info("dropping a client that stopped reading: %s", exc)
            abort_client(self.ws)
            self._closed = self._closed or (CLOSE_CLIENT_TOO_SLOW, str(exc))
            return True
        gone = isinstance(exc, WebSocketDisconnect) or (
            isinstance(exc, RuntimeError) and self.ws.application_state == WebSocketState.DISCONNECTED)
        if gone and record:
            code = getattr(exc, "code", None) or CLOSE_NORMAL
            self._closed = self._closed or (code, "client disconnected")
        return gone

    def _log_end(self) -> None:
        totals = self.translator.session.get("totals") or {}
        code, reason = self._closed or (CLOSE_NORMAL, "")
        log.info("session_end %s", json.dumps({
            "model": self.model,
            "backend": self.provider.backend,
            "dialect": self.translator.dialect,
            "duration_s": round(time.monotonic() - self.started, 3),
            "close_code": code,
            "close_reason": reason,
            "tokens": totals,
        }, sort_keys=True))


def _turn_pending(session: dict[str, Any]) -> bool:
    """Whether Gemini owes an answer: a turn was requested (`session.turn_started`, set by the client-event
    mappings) or a response is open (`session.response`)."""
    return bool(session.get("turn_started") or session.get("response"))


class _StallClock:
    """Tracks how long Gemini has been silent while it owes an answer.

    The silence counts from the later of the last Gemini frame and the moment a turn became pending (a
    turn requested after a long quiet is not already stalled)."""

    def __init__(self) -> None:
        self._last_frame = time.monotonic()
        self._pending_since: float | None = None

    def sent(self, pending: bool) -> None:
        if pending and self._pending_since is None:
            self._pending_since = time.monotonic()

    def received(self, pending: bool) -> None:
        self._last_frame = now = time.monotonic()
        self._pending_since = (self._pending_since or now) if pending else None

    def _silent_for(self) -> float:
        return time.monotonic() - max(self._last_frame, self._pending_since or 0.0)

    def stalled(self, limit: float, pending: bool) -> bool:
        if not pending:
            self._pending_since = None
            return False
        if self._pending_since is None:  # first noticed now
            self._pending_since = time.monotonic()
            return False
        return self._silent_for() >= limit

    def remaining(self, limit: float) -> float:
        """Seconds to wait before checking again (a quarter of the limit while no turn is pending, as a turn
        may start while the reader waits)."""
        if self._pending_since is None:
            return limit / 4
        return max(0.01, limit - self._silent_for())
