"""Carrying out what a session core said: the pump's writing half (server/realtime.py reads).

An `Output` is carried out in order: the client's events, then Gemini's messages, then the commands (timers,
Gemini connections, calls out, settling, the store, closing). As much of it as cannot wait is done at once,
synchronously (`now`): events onto sockets with nothing buffered, timers armed, background work spawned. The
rest goes on in order with awaits (`write`, or `soon` in the background). While any rest is under way,
`waits` counts it, and the pump then leaves new frames in their sockets' queues, so nothing overtakes it and
a slow socket pushes back on its peer as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from livegate.server.client_io import ClientLink
from livegate.server.session_services import SessionServices
from livegate.server.session_tasks import SessionTasks
from livegate.server.upstream_links import UpstreamLinks
from livegate.takeover.service import Keeper
from livegate.translation.commands import (
    CallOut,
    CloseClient,
    CloseUpstream,
    Command,
    OpenUpstream,
    SetTimer,
    Settle,
    StoreSession,
)
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Output

Background = Callable[[Any], Coroutine[Any, Any, None]]  # the pump's work for a command: opening, answers


class Carrier:
    def __init__(self, core: SessionCore, client: ClientLink, links: UpstreamLinks, tasks: SessionTasks,
                 services: SessionServices, keeper: Keeper | None, *, open_link: Background,
                 answer: Background) -> None:
        self.core, self.client, self.links, self.tasks = core, client, links, tasks
        self.services, self.keeper = services, keeper
        self._open_link, self._answer = open_link, answer
        self.waits = 0  # rests under way (on a socket, a close, the store)
        self.first_open: asyncio.Task[None] | None = None  # the first connection's opening (backpressure)

    @property
    def busy(self) -> bool:
        """A rest is under way, or the first connection is opening: a frame read now waits in its queue."""
        return bool(self.waits) or (self.first_open is not None and not self.first_open.done())

    async def write(self, out: Output) -> None:
        if (step := self.now(out)) is not None:
            self.waits += 1
            await self._rest(out, step)

    def soon(self, out: Output) -> None:
        """`write`, its rest (if any) in the background."""
        if (step := self.now(out)) is not None:
            self.waits += 1
            self.tasks.spawn(self._rest, out, step)

    def now(self, out: Output) -> int | None:
        """Carry `out` out as far as nothing has to wait (the core's observers, the accounting's among them,
        saw its events): None when all of it is done, else the step to go on from (0: the client's events,
        1: Gemini's messages, 2 + n: command n)."""
        if out.client and not self.client.send_now(out.client):
            return 0
        if out.upstream and not self.links.send_now(out.link, out.upstream):
            return 1
        for index, command in enumerate(out.commands):
            if not self._command_now(command):
                return 2 + index
        return None

    async def _rest(self, out: Output, step: int) -> None:
        """`out` from `step` on, in order; counted in `waits` (from before it began) until done."""
        try:
            if step == 0:
                await self.client.send(out.client)
            if step <= 1 and out.upstream:
                await self.links.send(out.link, out.upstream)
            for command in out.commands[max(0, step - 2):]:
                if not self._command_now(command):
                    await self._command(command)
        finally:
            self.waits -= 1

    def _command_now(self, command: Command) -> bool:
        """Carry out a command that needs no waiting; False for one that does (`_command`)."""
        match command:
            case SetTimer(timer, at):
                self.tasks.arm(timer, None if at is None else at - self.core.now(),
                               lambda timer: self.write(self.core.timer_expired(timer)))
            case OpenUpstream(first=first):  # in the background, the first too: the client's events
                task = self.tasks.spawn(self._open_link, command)  # meanwhile are answered or queued by the core
                if first:
                    self.first_open = task
            case CallOut():
                self.tasks.spawn(self._answer, command)  # the core holds what waits on it meanwhile
            case Settle(numbers):
                self.services.settle(numbers)
            case StoreSession(snapshot, release=False) if self.keeper is not None:
                self.keeper.store(snapshot)  # written in the background
            case CloseUpstream() | CloseClient():
                return False
            case StoreSession() if self.keeper is not None:
                return False
        return True

    async def _command(self, command: Command) -> None:
        match command:
            case CloseUpstream(link):
                await self.links.close(link)
            case CloseClient(code, reason):
                await self.client.close(code, reason)
            case StoreSession(snapshot) if self.keeper is not None:  # stored before the next command
                await self.keeper.release(snapshot, self.client.held_frames())  # closes the client
