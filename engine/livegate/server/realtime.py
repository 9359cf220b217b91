"""`/v1/realtime`: the pump around one session core (translation/session_core.py).

The pump moves bytes and decides nothing: it hands each client or Gemini frame to the core and carries out
what comes back, in order: client messages, Gemini messages, then the commands (timers, Gemini connections,
closing the client; calls out go to session_services.py, which hands their answers back to the core). A
client whose connection drops may take its session back within `reattach_grace_s` (client_io.py holds its
events). With a `Keeper` (takeover/) the core's snapshots go to the shared store, for another instance to
take the session over; `drain` closes it (1012) at its next rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from websockets.exceptions import ConnectionClosed

from livegate.accounting.gate import Grant, Stop
from livegate.close_codes import INTERNAL_ERROR, REFUSAL_BASE
from livegate.config import Timeouts
from livegate.observability.session import SessionWatch
from livegate.server.client_io import ClientLink, FairShare
from livegate.server.session_services import SessionServices
from livegate.server.session_tasks import SessionTasks
from livegate.server.upstream_links import UpstreamLinks
from livegate.takeover.service import Keeper, Takeover
from livegate.translation.commands import (
    CallOut,
    CloseClient,
    CloseUpstream,
    OpenUpstream,
    SetTimer,
    Settle,
    StoreSession,
)
from livegate.translation.resumption import ResumptionPolicy
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
        # `placement`: the session's deployment in its pool; `watch`: turns, traces, transcript, guardrails
        self.services = SessionServices(provider, model, self.timeouts, grant, placement, watch or SessionWatch())
        self.core = self.services.session_core(translator, policy, checkpoints=keeper is not None,
                                               watchdog=watchdog)
        self.takeover, self.keeper = takeover, keeper  # the shared store (None: the session lives here only)
        self.missed = missed  # a session taken over from the store: None for a new one, else the events to replay
        self.client = ClientLink(ws, self.timeouts.client_write_s, reattach_grace_s)
        self._detached = detached  # the gateway's registry of sessions awaiting their client, by session id
        self.links = UpstreamLinks()
        self._first_open: asyncio.Task[None] | None = None  # the first connection's opening (backpressure)
        self.tasks = SessionTasks(failed=lambda: self.client.close(INTERNAL_ERROR, "internal error"))

    async def run(self) -> None:
        if self.grant is not None:
            self.tasks.spawn(self._enforce_limits)
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
                away = self.keeper.away if self.keeper is not None else None  # the store says where it is
                if not await self.client.wait_for_return(self._detached, self.core.session_id, self, away):
                    break
        except Exception:
            if self.client.ended is None:
                log.exception("session failed")
            await self.client.close(INTERNAL_ERROR, "internal error")
        finally:
            await self.tasks.cancel()
            await self.links.close_all()
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
        self.tasks.spawn(self._stop, Stop(REFUSAL_BASE + 409, "session_in_use",
                                          "Another client connection took this session over."))

    # -- reading -----------------------------------------------------------------------------------

    async def _read_client(self) -> None:
        client, core, grant, share = self.client, self.core, self.grant, FairShare()
        while client.ended is None and (frame := await client.receive()) is not None:
            started = time.perf_counter()
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
            while link in self.links:  # once closed (CloseUpstream), its close drains what is left
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
        if out.client and not self.client.send_now(out.client):  # (written at once where nothing would wait)
            await self.client.send(out.client)  # (the core's observers, the accounting's among them, saw them)
        if out.upstream and not self.links.send_now(out.link, out.upstream):
            await self.links.send(out.link, out.upstream)
        for command in out.commands:
            match command:
                case SetTimer(timer, at):
                    self.tasks.arm(timer, None if at is None else at - self.core.now(),
                                   lambda timer: self._write(self.core.timer_expired(timer)))
                case OpenUpstream(first=first):  # in the background, the first too: the client's events
                    task = self.tasks.spawn(self._open, command)  # meanwhile are answered or queued by the core
                    if first:
                        self._first_open = task
                case CloseUpstream(link):
                    await self.links.close(link)
                case CloseClient(code, reason):
                    await self.client.close(code, reason)
                case CallOut():
                    self.tasks.spawn(self._answered, command)  # the core holds what waits on it meanwhile
                case Settle(numbers):
                    self.services.settle(numbers)
                case StoreSession(snapshot, release=False) if self.keeper is not None:
                    self.keeper.store(snapshot)  # written in the background
                case StoreSession(snapshot) if self.keeper is not None:  # stored before the next command
                    await self.keeper.release(snapshot, self.client.held_frames())  # closes the client

    # -- the world's answers, handed to the core ---------------------------------------------------

    async def _open(self, command: OpenUpstream) -> None:
        opened = await self.services.open(command)
        if not isinstance(opened, tuple):
            await self._write(self.core.upstream_failed(command.link, opened))
            return
        conn, first = opened
        self.links.add(command.link, conn)
        out = self.core.upstream_opened(command.link, first)
        self.tasks.spawn(self._read_upstream, command.link, conn)
        await self._write(out)

    async def _answered(self, command: CallOut) -> None:  # a reservation, a guardrail verdict, MCP, a side model
        async for out in self.services.answers(command, self.core):
            await self._write(out)

    async def _enforce_limits(self) -> None:
        """Budget spent, key deleted or expired, maximum duration: an `error` event, then the close code."""
        await self._stop(await self.services.stopped())

    async def _stop(self, stop: Stop) -> None:
        await self._write(self.core.stop(stop.message, stop.code, stop.close_code))
