"""`/v1/realtime`: the pump around one session core (translation/session_core.py).

The pump moves bytes and decides nothing: it hands each client or Gemini frame to the core, as the socket
reads it (`deliver_to`) or from the socket's queue while a write waits, and its carrier (carrier.py) carries
out what comes back, in order: client messages, Gemini messages, then the commands (timers, Gemini
connections, closing the client; calls out go to session_services.py, which hands their answers back to the
core). A client whose connection drops may take its session back within `reattach_grace_s` (client_io.py
holds its events). With a `Keeper` (takeover/) the core's snapshots go to the shared store, for another
instance to take the session over; `drain` closes it (1012) at its next rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from livegate.accounting.gate import Grant, Stop
from livegate.close_codes import INTERNAL_ERROR, REFUSAL_BASE
from livegate.config import Timeouts
from livegate.observability.session import SessionWatch
from livegate.server.carrier import Carrier
from livegate.server.client_io import ClientLink, FairShare
from livegate.server.session_services import SessionServices
from livegate.server.session_tasks import SessionTasks
from livegate.server.upstream_links import UpstreamLinks
from livegate.takeover.service import Keeper, Takeover
from livegate.translation.commands import CallOut, OpenUpstream
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
        self.tasks = SessionTasks(failed=lambda: self.client.close(INTERNAL_ERROR, "internal error"))
        self.out = Carrier(self.core, self.client, self.links, self.tasks, self.services, keeper,
                           open_link=self._open, answer=self._answered)

    async def run(self) -> None:
        if self.grant is not None:
            self.tasks.spawn(self._enforce_limits)
        if self.takeover is not None:
            self.takeover.attach(self, self.keeper)
        try:
            if self.missed is not None:  # taken over: the events its client missed, then Gemini again
                await self.client.send_frames(self.missed)
                await self.out.write(self.core.take_over())
            else:
                await self.out.write(self.core.start())
                fixed = self.grant.fixed_session(self.core.dialect) if self.grant is not None else None
                if fixed:  # a client secret's session applies from the start
                    await self.out.write(self.core.client_frame({"type": "session.update", "session": fixed}))
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
        await self.out.write(self.core.drain(deadline))

    def taken_over(self) -> None:
        """Another instance took this session over for another client: this one ends (session_in_use)."""
        self.tasks.spawn(self._stop, Stop(REFUSAL_BASE + 409, "session_in_use",
                                          "Another client connection took this session over."))

    # -- reading -----------------------------------------------------------------------------------

    async def _read_client(self) -> None:
        client, core, share = self.client, self.core, FairShare()
        client.deliver_to(lambda frame: client.ended is None and self._take(share, self._client_input, frame))
        try:
            while client.ended is None and (frame := await client.receive()) is not None:
                started = time.perf_counter()
                await self.out.write(self._client_input(frame))
                if core.input_backlogged and self.out.first_open is not None:
                    await asyncio.wait({self.out.first_open})  # backpressure until Gemini has set the session up
                await share.turn(started)
        finally:
            client.deliver_to(None)

    def _client_input(self, frame: str | bytes) -> Output:
        if (grant := self.grant) is not None:
            grant.client_frame(frame)
            frame = grant.fix_client_frame(frame, self.core.dialect)
        return self.core.client_frame(frame)

    async def _read_upstream(self, link: int, conn: UpstreamConnection) -> None:
        share = FairShare()
        conn.deliver_to(lambda frame: link in self.links and self._take(share, self._upstream_input, link, frame))
        try:
            while link in self.links:  # once closed (CloseUpstream), its close drains what is left
                frame = await conn.recv()
                started = time.perf_counter()
                await self.out.write(self._upstream_input(link, frame))
                await share.turn(started)
        except ConnectionClosed as exc:
            code, reason = conn.close_info(exc)
            if link == self.core.link:
                self.services.connection_lost(code)
            await self.out.write(self.core.upstream_closed(link, code, reason))

    def _upstream_input(self, link: int, frame: str | bytes) -> Output:
        if self.grant is not None:
            self.grant.upstream_frame(frame)
        return self.core.upstream_frame(link, frame)

    def _take(self, share: FairShare, translate: Callable[..., Output], *frame: Any) -> bool:
        """A frame handed over as it was read (`deliver_to`): translated and carried out at once, a rest that
        must wait in the background. Declined (its reader's loop reads it, in order) while the carrier is busy
        or the reader took its share of the loop."""
        if share.due or self.out.busy:
            return False
        started = time.perf_counter()
        try:
            self.out.soon(translate(*frame))
        except Exception:
            log.exception("session failed")
            self.tasks.spawn(self.client.close, INTERNAL_ERROR, "internal error")
        share.spent(started)
        return True

    # -- the world's answers, handed to the core ---------------------------------------------------

    async def _open(self, command: OpenUpstream) -> None:
        opened = await self.services.open(command)
        if not isinstance(opened, tuple):
            await self.out.write(self.core.upstream_failed(command.link, opened))
            return
        conn, first = opened
        self.links.add(command.link, conn)
        out = self.core.upstream_opened(command.link, first)
        self.tasks.spawn(self._read_upstream, command.link, conn)
        await self.out.write(out)

    async def _answered(self, command: CallOut) -> None:  # a reservation, a guardrail verdict, MCP, a side model
        async for out in self.services.answers(command, self.core):
            await self.out.write(out)

    async def _enforce_limits(self) -> None:
        """Budget spent, key deleted or expired, maximum duration: an `error` event, then the close code."""
        await self._stop(await self.services.stopped())

    async def _stop(self, stop: Stop) -> None:
        await self.out.write(self.core.stop(stop.message, stop.code, stop.close_code))
