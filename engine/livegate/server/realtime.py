"""`/v1/realtime`: the pump around one session core (translation/session_core.py).

The pump moves bytes and decides nothing: it reads a client or Gemini frame, hands it to the core, and carries
out what comes back in order: client messages, Gemini messages, then the commands (arm a timer, open or close a
Gemini connection, close the client, and the calls out that session_services.py makes: a reservation, a
guardrail check, an MCP request, an out-of-band answer). A timer's expiry, a call's answer and a connection's
opening, failure or close are inputs too. A client whose connection drops may take its session back within
`reattach_grace_s` (`?session_id=`; client_io.py holds its events meanwhile). With a `Keeper` (takeover/), the
core's snapshots go to the shared store in the background, so that another instance can take the session over;
`drain` closes it (1012) at its next rest, and a session restored from the store starts with `take_over`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.exceptions import ConnectionClosed

from livegate.accounting.gate import Grant
from livegate.close_codes import INTERNAL_ERROR, NORMAL, REFUSAL_BASE
from livegate.config import Timeouts
from livegate.observability.session import SessionWatch
from livegate.server.client_io import ClientLink, FairShare
from livegate.server.session_services import SessionServices
from livegate.takeover.service import Keeper, Takeover
from livegate.translation.commands import (
    CheckGuardrail,
    CloseClient,
    CloseUpstream,
    Command,
    GenerateRequest,
    McpRequest,
    OpenUpstream,
    Reserve,
    SetTimer,
    Settle,
    StoreSession,
    Timer,
)
from livegate.translation.observer import Observers
from livegate.translation.resumption import ResumptionPolicy
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Output, Translator
from livegate.translation.watchdog import WatchdogSettings
from livegate.upstream.base import Provider
from livegate.upstream.connection import UpstreamConnection
from livegate.upstream.pool import Placement

log = logging.getLogger("livegate.session")


class RealtimeSession:
    def __init__(self, ws: Any, translator: Translator, provider: Provider, model: str,
                 timeouts: Timeouts | None = None, grant: Grant | None = None,
                 policy: ResumptionPolicy | None = None, *, detached: dict[str, RealtimeSession] | None = None,
                 reattach_grace_s: float = 0.0, placement: Placement | None = None, takeover: Takeover | None = None,
                 keeper: Keeper | None = None, missed: list[str] | None = None,
                 watch: SessionWatch | None = None, watchdog: WatchdogSettings | None = None) -> None:
        self.grant = grant  # accounting: usage, cost, limits (None: not metered)
        self.model = model  # as the client named it: a reattaching client names the same
        self.timeouts = timeouts or Timeouts()
        if placement is not None:  # the session's deployment in its pool, which opens its connections
            placement.watch(translator.usage)  # its tokens count against the deployment's tpm
        watch = watch or SessionWatch()  # turns, traces, transcript, guardrails (livegate/observability/)
        self.services = SessionServices(provider, model, self.timeouts, grant, placement, watch)
        watchers = [o for o in (grant, *watch.observers) if o is not None]
        observer = watchers[0] if len(watchers) == 1 else Observers(*watchers) if watchers else None
        self.core = SessionCore(translator, policy, stall_after_s=self.timeouts.upstream_stall_s, observer=observer,
                                relocations=placement.alternatives if placement is not None else 0,
                                checkpoints=keeper is not None, reserve=grant is not None and grant.reserves,
                                watchdog=watchdog)
        self.takeover, self.keeper = takeover, keeper  # the shared store (None: the session lives here only)
        self.missed = missed  # a session taken over from the store: None for a new one, else the events to replay
        self.client = ClientLink(ws, self.timeouts.client_write_s, reattach_grace_s)
        self._detached = detached  # the gateway's registry of sessions awaiting their client, by session id
        self._links: dict[int, UpstreamConnection] = {}
        self._first_open: asyncio.Task[None] | None = None  # the first connection's opening (backpressure)
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        if self.grant is not None:
            self._spawn(self._enforce_limits)
        if self.takeover is not None:
            self.takeover.attach(self, self.keeper)
        try:
            if self.missed is not None:  # taken over: the events its client missed, then Gemini again
                await self.client.send_frames(self.missed)
                await self._write(self.core.take_over())
            else:
                await self._write(self.core.start())
                fixed = self.grant.fixed_session(self.core.dialect) if self.grant is not None else None
                if fixed:  # a client secret's session applies from the start
                    await self._write(self.core.client_frame({"type": "session.update", "session": fixed}))
            while True:
                await self._read_client()
                if not await self.client.wait_for_return(self._detached, self.core.session_id, self, self._away):
                    break
        except Exception:
            if self.client.ended is None:
                log.exception("session failed")
            await self.client.close(INTERNAL_ERROR, "internal error")
        finally:
            for handle in self._timers.values():
                handle.cancel()
            for task in list(self._tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for conn in self._links.values():
                with contextlib.suppress(Exception):
                    await conn.close()
            self.client.release()
            if self.takeover is not None:
                self.takeover.detach(self)
            if self.keeper is not None:
                self.keeper.ended()
            await self.services.finish(self.client.ended, self.core.dialect, self.core.session_id,
                                       self.core.usage_summary())

    async def reattach(self, ws: Any) -> None:
        """A reconnecting client takes the session over; returns when the session is done with `ws`."""
        await self.client.come_back(ws)

    async def drain(self, deadline: float) -> None:
        """The gateway drains, or another instance asked for this detached session: stored and closed (1012)
        at its next rest, at the latest at `deadline` (time.monotonic)."""
        await self._write(self.core.drain(deadline))

    def taken_over(self) -> None:
        """Another instance took this session over for another client: this one ends (session_in_use)."""
        self._spawn(self._lost)

    async def _lost(self) -> None:
        await self._write(self.core.stop("Another client connection took this session over.", "session_in_use",
                                         REFUSAL_BASE + 409))

    def _away(self, away: bool) -> None:
        """The client dropped (True; the session waits for it) or came back (False): the store says so."""
        if self.keeper is not None:
            self.keeper.detached() if away else self.keeper.attached()

    # -- reading -----------------------------------------------------------------------------------

    async def _read_client(self) -> None:
        client, core, grant, share = self.client, self.core, self.grant, FairShare()
        while client.ended is None:
            message = await client.ws.receive()
            started = time.perf_counter()
            if message["type"] == "websocket.disconnect":
                client.left(message.get("code", NORMAL))
                return
            frame = message.get("text")
            if frame is None:  # OpenAI clients send text; JSON in a binary frame is accepted too
                frame = message.get("bytes")
                if frame is None:
                    continue
            if grant is not None:
                grant.client_frame(frame)
                frame = grant.fix_client_frame(frame, core.dialect)
            await self._write(core.client_frame(frame))
            if core.input_backlogged and self._first_open is not None:
                await asyncio.wait({self._first_open})  # backpressure until Gemini has set the session up
            await share.turn(started)

    async def _read_upstream(self, link: int, conn: UpstreamConnection) -> None:
        core, grant, share = self.core, self.grant, FairShare()
        try:
            while link in self._links:  # once closed (CloseUpstream), its close drains what is left
                frame = await conn.recv()
                started = time.perf_counter()
                if grant is not None:
                    grant.upstream_frame(frame)
                await self._write(core.upstream_frame(link, frame))
                await share.turn(started)
        except ConnectionClosed as exc:
            code, reason = conn.close_info(exc)
            if link == core.link:
                self.services.connection_lost(code)
            await self._write(core.upstream_closed(link, code, reason))

    # -- writing: what the core said ---------------------------------------------------------------

    async def _write(self, out: Output) -> None:
        if out.client:
            if self.grant is not None:
                self.grant.client_messages(out.client)
            await self.client.send(out.client)
        if out.upstream and (conn := self._links.get(out.link or 0)) is not None:  # links count from 1
            for message in out.upstream:
                try:
                    await conn.send(message)
                except ConnectionClosed:
                    break  # its reader reports the close
        for command in out.commands:
            await self._do(command)

    async def _do(self, command: Command) -> None:
        match command:
            case SetTimer(timer, at):
                if (handle := self._timers.pop(timer, None)) is not None:
                    handle.cancel()
                if at is not None:
                    delay = max(0.0, at - self.core.now())
                    self._timers[timer] = asyncio.get_running_loop().call_later(delay, self._expired, timer)
            case OpenUpstream():
                # in the background, the first connection too: the client's events meanwhile are answered at
                # once or queued by the core for Gemini, never left unread until the setup timeout
                task = self._spawn(self._open, command)
                if command.first:
                    self._first_open = task
            case CloseUpstream(link):
                if (conn := self._links.pop(link, None)) is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            case CloseClient(code, reason):
                await self.client.close(code, reason)
            case CheckGuardrail():
                self._spawn(self._check, command)  # input of that side waits in the core meanwhile
            case Reserve():
                self._spawn(self._reserve, command)  # the core holds the content meanwhile
            case Settle(numbers):
                if self.grant is not None:
                    self.grant.settle_responses(numbers)
            case McpRequest():
                self._spawn(self._ask_mcp, command)  # the session goes on while the MCP server answers
            case GenerateRequest():
                self._spawn(self._generate, command)  # an out-of-band answer, beside the live session
            case StoreSession(snapshot, release=False):
                if self.keeper is not None:
                    self.keeper.store(snapshot)  # written in the background
            case StoreSession(snapshot):
                if self.keeper is not None:  # stored before the client is closed (the next command)
                    await self.keeper.release(snapshot, self.client.held_frames())

    # -- what the commands asked of the world outside (session_services.py), handed back to the core ----------

    async def _open(self, command: OpenUpstream) -> None:
        opened = await self.services.open(command)
        if not isinstance(opened, tuple):
            await self._write(self.core.upstream_failed(command.link, opened))
            return
        conn, first = opened
        self._links[command.link] = conn
        out = self.core.upstream_opened(command.link, first)
        self._spawn(self._read_upstream, command.link, conn)
        await self._write(out)

    async def _reserve(self, command: Reserve) -> None:
        await self._write(self.core.reservation_answered(command.number, await self.services.reserve(command)))

    async def _check(self, command: CheckGuardrail) -> None:
        await self._write(self.core.guardrail_decided(command.check, await self.services.check(command)))

    async def _ask_mcp(self, request: McpRequest) -> None:
        await self._write(self.core.mcp_result(request, await self.services.ask_mcp(request)))

    async def _generate(self, request: GenerateRequest) -> None:
        async for event in self.services.generate(request):
            await self._write(self.core.side_result(request, event))

    def _expired(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        self._spawn(self._on_timer, timer)

    async def _on_timer(self, timer: Timer) -> None:
        await self._write(self.core.timer_expired(timer))

    async def _enforce_limits(self) -> None:
        """Budget spent, key deleted or expired, maximum duration: an `error` event, then the close code."""
        stop = await self.services.stopped()
        await self._write(self.core.stop(stop.message, stop.code, stop.close_code))

    def _spawn(self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(work, *args))  # `work` starts inside: a task cancelled
        self._tasks.add(task)  # before it runs leaves no coroutine never awaited
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guarded(self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        try:
            await work(*args)
        except asyncio.CancelledError:
            raise
        except Exception:  # never leave the client waiting on a task that died
            log.exception("session task failed")
            await self.client.close(INTERNAL_ERROR, "internal error")
