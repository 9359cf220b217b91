"""`/v1/realtime`: one OpenAI Realtime client, one translator, one Gemini Live connection.

The pump is thin on purpose: it moves frames between the sockets and the translator and owns the
timing the translator cannot (connect, the idle timer, closes).

Gemini is contacted when the first content arrives (the translator emits `setup` then), because
Gemini's configuration is fixed by that one message.

A session outlives its Gemini connection: after a goAway the pump opens a new connection resumed
with the latest handle and switches to it at a turn boundary (mappings/resumption.yaml says what one
is), no later than timeLeft minus a margin; client input is queued meanwhile (audio bounded). A
connection that fails is recovered the same way (a 1011 with a fresh session re-seeded with the
conversation). What the new connection is sent is lifecycle/upstream_resume.yaml's.

Close codes sent to the client:
    1000  the session ended normally (client or Gemini closed cleanly)
    1011  an internal livegate error
    1014  Gemini could not be reached, refused the connection, or closed it abnormally (bad gateway)
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
from websockets.exceptions import ConnectionClosed

from livegate.translator import Output, Translator
from livegate.upstream.base import Provider
from livegate.upstream.connection import UpstreamConnection, UpstreamError
from livegate.upstream.google_credentials import CredentialsError
from livegate.upstream.resumption import InputQueue, ResumptionPolicy, duration_s

log = logging.getLogger("livegate.session")

CLOSE_NORMAL = 1000
CLOSE_INTERNAL_ERROR = 1011
CLOSE_BAD_GATEWAY = 1014
# Gemini closes that resuming cannot fix: our request was refused (1007 invalid, 1008 policy).
NOT_RECOVERABLE = frozenset({CLOSE_NORMAL, 1007, 1008})
# Client closes after which the openai SDK reconnects by itself: the session waits for it to reattach.
RETRIED_BY_SDK = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1015})
MAX_HELD_CLIENT_EVENTS = 5000  # events for a detached client, oldest dropped beyond


class RealtimeSession:
    def __init__(self, ws: WebSocket, translator: Translator, provider: Provider, model: str,
                 policy: ResumptionPolicy | None = None, *, detached: dict[str, RealtimeSession] | None = None,
                 reattach_grace_s: float = 0.0) -> None:
        self.ws = ws
        self.translator = translator
        self.provider = provider
        self.model = model
        self.upstream: UpstreamConnection | None = None
        self._send_lock = asyncio.Lock()
        self._upstream_task: asyncio.Task[None] | None = None
        self._closed: tuple[int, str] | None = None
        self.started = time.monotonic()
        self.policy = policy or ResumptionPolicy.load()
        self._queue: InputQueue | None = None  # client input held while switching connections
        self._switch_task: asyncio.Task[None] | None = None
        self._deadline_task: asyncio.Task[None] | None = None
        self._recoveries = 0  # failed connections recovered since the last new handle
        self._recovery_handle: Any = None
        self.switches = 0  # connections the session moved to (goAway, recovery)
        # Reattach: a client whose connection dropped may take the session over within the grace period.
        self._detached_sessions = detached  # the gateway's registry, session id -> session
        self.reattach_grace_s = reattach_grace_s
        self._held_client: list[str] = []  # events for a client whose connection is gone
        self._client_gone = False
        self._reattached = asyncio.Event()
        self._ws_released: asyncio.Future[None] | None = None  # resolved when a reattached socket is done
        self.reattaches = 0

    async def run(self) -> None:
        try:
            await self.deliver(self.translator.start())
            while True:
                try:
                    await self._client_loop()
                except WebSocketDisconnect as exc:
                    self._closed = self._closed or (exc.code, "client disconnected")
                if not await self._await_reattach():
                    break
        except WebSocketDisconnect:
            self._closed = self._closed or (CLOSE_NORMAL, "client disconnected")
        except Exception:
            log.exception("session failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            for task in (self._switch_task, self._deadline_task, self._upstream_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if self.upstream is not None:
                with contextlib.suppress(Exception):
                    await self.upstream.close()
            self._release_ws()
            self._log_end()

    # -- reattach ----------------------------------------------------------------------------------

    async def _await_reattach(self) -> bool:
        """After the client's connection dropped: keep the session for the grace period, for the client
        to take it over (`?session_id=`). True when it did; the events it missed are sent first."""
        self._release_ws()
        closed = self._closed
        session_id = self.translator.session.get("id")
        if (closed is None or closed[1] != "client disconnected" or closed[0] not in RETRIED_BY_SDK
                or self.reattach_grace_s <= 0 or self._detached_sessions is None or not session_id):
            return False
        self._client_gone, self._closed = True, None
        self._reattached.clear()
        self._detached_sessions[session_id] = self
        log.info("client connection dropped (%s); keeping the session %.0f s for a reattach",
                 closed[0], self.reattach_grace_s)
        try:
            await asyncio.wait_for(self._reattached.wait(), self.reattach_grace_s)
        except TimeoutError:
            self._closed = (closed[0], "client did not reattach")
            return False
        finally:
            self._detached_sessions.pop(session_id, None)
        if self._closed is not None:  # the session ended while the client was away
            return False
        async with self._send_lock:
            held, self._held_client = self._held_client, []
            for text in held:
                await self.ws.send_text(text)
            self._client_gone = False
        self.reattaches += 1
        return True

    async def reattach(self, ws: WebSocket) -> None:
        """A reconnecting client takes the session over; returns when the session is done with `ws`."""
        self._ws_released = asyncio.get_running_loop().create_future()
        self.ws = ws
        self._reattached.set()
        await self._ws_released

    def _release_ws(self) -> None:
        if self._ws_released is not None and not self._ws_released.done():
            self._ws_released.set_result(None)

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
            await self.deliver(self.translator.from_client(frame))

    async def deliver(self, out: Output) -> None:
        """Send an Output: client messages first (they are confirmations), then Gemini's."""
        if out.client:
            async with self._send_lock:
                for message in out.client:
                    text = orjson.dumps(message).decode()
                    if self._client_gone:
                        self._hold_for_client(text)
                        continue
                    try:
                        await self.ws.send_text(text)
                    except Exception:
                        if self.reattach_grace_s <= 0:
                            raise
                        self._client_gone = True  # the client loop decides: reattach or end
                        self._hold_for_client(text)
        if not out.upstream:
            self._check_switch()
            return
        messages = out.upstream
        if self._queue is not None:  # moving to a new connection: hold the input, in order
            await self._hold(messages)
            return
        if self.upstream is None:
            if self._closed is not None:
                return
            messages = await self._open_upstream(messages)
            if messages is None:
                return
        for message in messages:
            try:
                await self.upstream.send(message)
            except ConnectionClosed:
                break  # the upstream reader reports the close
        self._check_switch()

    async def _open_upstream(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Connect, send `setup`, wait for setupComplete; returns the messages still to send."""
        setup, rest = messages[0], messages[1:]
        if "setup" not in setup:
            raise RuntimeError("the first upstream message of a session must be setup")
        try:
            target = await self.provider.target()
            self.upstream = await UpstreamConnection.open(target)
            await self.upstream.send(setup)
            first = await asyncio.wait_for(self.upstream.recv(), timeout=30)
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
        self._upstream_task = asyncio.create_task(self._upstream_loop(self.upstream))
        return rest

    async def _upstream_loop(self, conn: UpstreamConnection) -> None:
        try:
            await self._pump_upstream(conn)
        except asyncio.CancelledError:
            raise
        except Exception:  # never leave the client waiting on a reader that died
            log.exception("upstream reader failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")

    async def _pump_upstream(self, conn: UpstreamConnection) -> None:
        while True:
            timeout = self.translator.idle_timeout
            try:
                frame = await (asyncio.wait_for(conn.recv(), timeout) if timeout else conn.recv())
            except TimeoutError:
                await self.deliver(self.translator.upstream_idle())
                continue
            except ConnectionClosed as exc:
                if conn is not self.upstream or self._queue is not None:
                    return  # a connection the session moved away from (or is moving away from)
                code, reason = conn.close_info(exc)
                if self._recoverable(code):
                    log.info("upstream closed (%s); moving the session to a new connection", code)
                    self._start_switch("fresh" if code == CLOSE_INTERNAL_ERROR else "handle",
                                       recovering=not self.translator.session.get("go_away"))
                    return
                await self._upstream_closed(code, reason)
                return
            await self.deliver(self.translator.from_upstream(frame))

    # -- moving the session to a new connection ----------------------------------------------------

    def _recoverable(self, code: int) -> bool:
        if self.translator.session.get("go_away"):
            return True  # the connection was ending anyway
        return code not in NOT_RECOVERABLE and self._recoveries < self.policy.recoveries

    def _check_switch(self) -> None:
        """After each input: start the move a goAway (or a session.update needing a new setup) asked for,
        once the session is at a turn boundary."""
        session = self.translator.session
        if self._recoveries and session.get("resumption_handle") != self._recovery_handle:
            self._recoveries = 0  # the recovered connection completed a turn
        go_away = session.get("go_away")
        if not (go_away or session.get("reconfigure")) or self._switch_task is not None or self._closed is not None \
                or self.upstream is None:
            return
        if self.policy.at_turn_boundary(self.translator):
            self._start_switch("handle")
        elif go_away and self._deadline_task is None:
            left = duration_s(go_away)
            delay = max(0.0, (left if left is not None else 0.0) - self.policy.switch_margin_s)
            self._deadline_task = asyncio.create_task(self._switch_by_deadline(delay))

    async def _switch_by_deadline(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._deadline_task = None
        if self._switch_task is None and self._closed is None:
            log.info("no turn boundary before the goAway deadline; switching mid-turn")
            self._start_switch("handle")

    def _start_switch(self, mode: str, *, recovering: bool = False) -> None:
        if self._switch_task is None:
            self._queue = InputQueue(self.policy.queue_audio_ms)
            self._switch_task = asyncio.create_task(self._switch(mode, recovering))

    def _handle_usable(self) -> bool:
        session = self.translator.session
        arrived = session.get("resumption_handle_at")
        return bool(session.get("resumption_handle")) and not session.get("handle_stale") and (
            isinstance(arrived, int | float) and time.time() - arrived < self.policy.handle_ttl_s)

    async def _switch(self, mode: str, recovering: bool) -> None:
        """Open the new connection (resumed, else fresh and re-seeded), then flush the held input."""
        try:
            if self._deadline_task is not None and asyncio.current_task() is not self._deadline_task:
                self._deadline_task.cancel()
            self._deadline_task = None
            cut = not self.policy.at_turn_boundary(self.translator)
            if mode == "handle" and not self._handle_usable():
                mode = "fresh"
            old = self.upstream
            moved = await self._reconnect(mode, cut)
            if not moved and mode == "handle":
                moved = await self._reconnect("fresh", False)
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.close()
            if not moved:
                await self._fail("livegate could not move the session to a new Gemini Live connection.",
                                 "upstream_unavailable")
                return
            self.switches += 1
            if recovering:
                self._recoveries += 1
                self._recovery_handle = self.translator.session.get("resumption_handle")
            queue, self._queue = self._queue, None
            for message in queue.drain() if queue is not None else ():
                try:
                    await self.upstream.send(message)
                except ConnectionClosed:
                    break
        finally:
            self._switch_task = None
            self._queue = None
        self._check_switch()

    async def _reconnect(self, mode: str, cut: bool) -> bool:
        out = self.translator.upstream_resume(mode, cut=cut)
        if out.client:
            await self.deliver(Output(client=out.client))
        setup, rest = out.upstream[0], out.upstream[1:]
        conn: UpstreamConnection | None = None
        try:
            conn = await UpstreamConnection.open(await self.provider.target())
            await conn.send(setup)
            first = await asyncio.wait_for(conn.recv(), timeout=30)
            for message in rest:
                await conn.send(message)
        except ConnectionClosed as exc:
            log.warning("the new upstream connection (%s) closed: %s", mode, conn.close_info(exc) if conn else "")
            return False
        except Exception as exc:  # unreachable, refused, timed out, credentials: the caller decides
            log.warning("could not open the new upstream connection (%s): %s", mode, type(exc).__name__)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            return False
        self.upstream = conn
        await self.deliver(Output(client=self.translator.from_upstream(first).client))
        self._upstream_task = asyncio.create_task(self._upstream_loop(conn))
        return True

    def _hold_for_client(self, text: str) -> None:
        self._held_client.append(text)
        if len(self._held_client) > MAX_HELD_CLIENT_EVENTS:
            del self._held_client[0]

    async def _hold(self, messages: list[dict[str, Any]]) -> None:
        assert self._queue is not None
        for message in messages:
            self._queue.put(message)
        dropped = self._queue.take_dropped()
        if dropped:
            await self.deliver(self.translator.server_error(
                f"{dropped:.0f} ms of input audio were dropped while livegate moved the session to a new "
                f"Gemini Live connection (at most {self.policy.queue_audio_ms:.0f} ms are held).",
                "input_audio_dropped"))

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
            self._reattached.set()  # a session waiting for its client to come back ends now
            with contextlib.suppress(Exception):
                await self.ws.close(code=code, reason=reason[:120])

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
