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
    1014  Gemini could not be reached, refused the connection, closed it abnormally (bad gateway), or
          stalled: sent nothing for `upstream_stall_timeout_s` in the middle of a turn (an `error` first)
    1008  the client read nothing for `client_write_timeout_s` (its connection is dropped; the code is
          what the session log records, as the close frame cannot reach such a client)
    4008, 4010, 4029  accounting stopped the session (engine/livegate/accounting/gate.py), after an `error` event

Robustness: relay loops hand the event loop to other sessions after every frame (a flooding peer
cannot starve the gateway), and writes to the client have a deadline (client_io.py).
"""

from __future__ import annotations

import asyncio
import collections
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
from livegate.server.client_io import (
    CLOSE_CLIENT_TOO_SLOW,
    ClientStalled,
    abort_client,
    close_reason,
    fair_turn,
    send_within,
)
from livegate.translation.translator import Output, Translator
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
# Not 1012: that is uvicorn shutting this gateway down, and the session cannot outlive the process.
RETRIED_BY_SDK = frozenset({1001, 1005, 1006, 1011, 1013, 1015})
MAX_HELD_CLIENT_EVENTS = 5000  # events for a detached client, oldest dropped beyond


class RealtimeSession:
    def __init__(self, ws: WebSocket, translator: Translator, provider: Provider, model: str,
                 timeouts: Timeouts | None = None, grant: Grant | None = None,
                 policy: ResumptionPolicy | None = None, *, detached: dict[str, RealtimeSession] | None = None,
                 reattach_grace_s: float = 0.0) -> None:
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
        self._client_away = False  # its connection dropped; events are held for a reattach
        self._reattached = asyncio.Event()
        # Gemini's continuation after a tool output, held until the client's response.create (or
        # continuation_wait): frames in arrival order, the first still being delivered while it leads.
        self._awaiting_request: collections.deque[str | bytes] = collections.deque()
        self._awaiting_until: float | None = None
        self._ws_released: asyncio.Future[None] | None = None  # resolved when a reattached socket is done
        self.reattaches = 0

    async def run(self) -> None:
        enforcer = asyncio.create_task(self._enforce_limits()) if self.grant else None
        try:
            await self.deliver(self.translator.start())
            fixed = self.grant.fixed_session(self.translator.dialect) if self.grant is not None else None
            if fixed:  # a client secret's session applies from the start
                await self.deliver(self.translator.from_client({"type": "session.update", "session": fixed}))
            while True:
                try:
                    await self._client_loop()
                except WebSocketDisconnect as exc:
                    self._closed = self._closed or (exc.code, "client disconnected")
                if not await self._await_reattach():
                    break
        except WebSocketDisconnect:
            self._closed = self._closed or (CLOSE_NORMAL, "client disconnected")
        except Exception as exc:
            if not self._client_gone(exc):
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
        self._client_away, self._closed = True, None
        self._reattached.clear()
        self._detached_sessions[session_id] = self
        log.info("client connection dropped (%s); keeping the session %.0f s for a reattach",
                 closed[0], self.reattach_grace_s)
        try:
            async with asyncio.timeout(self.reattach_grace_s):
                await self._reattached.wait()
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
                await send_within(self.ws, text, self.timeouts.client_write_s)
            self._client_away = False
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
            if self.grant is not None:
                self.grant.client_frame(frame)
                frame = self.grant.fix_client_frame(frame, self.translator.dialect)
            await self.deliver(self.translator.from_client(frame))
            if self._awaiting_request and self._awaiting_until is not None and not self.translator.awaits_request:
                await self._release_continuation()  # the response.create it waited for came
            await fair_turn()

    async def deliver(self, out: Output) -> None:
        """Send an Output: client messages first (they are confirmations), then Gemini's."""
        if out.client:
            if self.grant is not None:
                self.grant.client_messages(out.client)
            async with self._send_lock:
                for message in out.client:
                    text = orjson.dumps(message).decode()
                    if self._client_away:
                        self._hold_for_client(text)
                        continue
                    try:
                        await send_within(self.ws, text, self.timeouts.client_write_s)
                    except ClientStalled:
                        raise  # connected but not reading: dropped, never reattached
                    except Exception:
                        if self.reattach_grace_s <= 0:
                            raise
                        self._client_away = True  # the client loop decides: reattach or end
                        self._hold_for_client(text)
        if not out.upstream or (self.grant is not None and self.grant.stop is not None):
            self._check_switch()
            return  # (nothing more reaches Gemini once accounting has stopped the session)
        messages = out.upstream
        if self._queue is not None:  # moving to a new connection: hold the input, in order
            await self._hold(messages)
            return
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
                break  # the upstream reader reports the close
        self._stall.sent(_turn_pending(self.translator.session))
        self._check_switch()

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
            await self._fail(f"Gemini Live credentials failed: {exc}", "upstream_auth_failed")
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
        except Exception as exc:  # never leave the client waiting on a reader that died
            if self._client_gone(exc, record=False):  # the client loop records the client's own close code
                return
            log.exception("upstream reader failed")
            await self._close_client(CLOSE_INTERNAL_ERROR, "internal error")

    async def _pump_upstream(self, conn: UpstreamConnection) -> None:
        while True:
            idle = self.translator.idle_timeout
            user_idle = self.translator.user_idle_timeout
            stall = self._stall.remaining(self.timeouts.upstream_stall_s)
            held = None if self._awaiting_until is None else max(0.0, self._awaiting_until - time.monotonic())
            timeout = min((t for t in (idle, stall, user_idle, held) if t is not None), default=None)
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a frame that arrives together
                # with a cancellation and drops the cancellation, so the session's end would wait forever.
                async with asyncio.timeout(timeout):
                    frame = await conn.recv()
            except TimeoutError:
                if held is not None and timeout == held:
                    await self._release_continuation()  # the client did not ask: served as Gemini's own
                    continue
                if self._stall.stalled(self.timeouts.upstream_stall_s, _turn_pending(self.translator.session)):
                    await self._fail(f"Gemini Live sent nothing for {self.timeouts.upstream_stall_s:g} s in the "
                                     "middle of a turn.", "upstream_timeout")
                    return
                if idle is not None and timeout == idle:
                    await self.deliver(self.translator.upstream_idle())
                if user_idle is not None and timeout == user_idle:
                    await self.deliver(self.translator.user_idle())
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
            if self._awaiting_request or self.translator.awaits_request:
                if not self._awaiting_request:
                    self._awaiting_until = time.monotonic() + self.translator.continuation_wait
                self._awaiting_request.append(frame)
                self._stall.received(True)
                continue
            await self._from_upstream(frame)
            await fair_turn()

    async def _from_upstream(self, frame: str | bytes) -> None:
        if self.grant is not None:
            self.grant.upstream_frame(frame)
        await self.deliver(self.translator.from_upstream(frame))
        self._stall.received(_turn_pending(self.translator.session))

    async def _release_continuation(self) -> None:
        """Translate the held continuation in order: after the client's response.create, or when the
        wait is over. The leading frame stays in the queue until delivered, so the pump keeps queueing."""
        self._awaiting_until = None
        while self._awaiting_request:
            await self._from_upstream(self._awaiting_request[0])
            self._awaiting_request.popleft()

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
            assert self.upstream is not None  # the new connection
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
            async with asyncio.timeout(self.timeouts.upstream_setup_s):
                first = await conn.recv()
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
        await self._close_client(CLOSE_BAD_GATEWAY, message)

    async def _close_client(self, code: int, reason: str) -> None:
        if self._closed is None:
            self._closed = (code, reason)
            self._reattached.set()  # a session waiting for its client to come back ends now
            try:
                async with asyncio.timeout(self.timeouts.client_write_s):  # a close frame waits like any write
                    await self.ws.close(code=code, reason=close_reason(reason))
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
