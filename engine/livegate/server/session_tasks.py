"""A realtime session's background work: the timers its core armed, and the tasks its commands started.

A task that fails must never leave the client waiting on it: its failure is logged and the session's
`failed` callback runs (the pump closes the client, 1011). At the session's end everything still pending
is cancelled and awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from livegate.translation.commands import Timer

log = logging.getLogger("livegate.session")

Work = Callable[..., Coroutine[Any, Any, None]]


class SessionTasks:
    def __init__(self, failed: Callable[[], Awaitable[None]]) -> None:
        self._failed = failed
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Work, *args: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(work, *args))  # `work` starts inside: a task cancelled
        self._tasks.add(task)  # before it runs leaves no coroutine never awaited
        task.add_done_callback(self._tasks.discard)
        return task

    def arm(self, timer: Timer, delay_s: float | None, expired: Work) -> None:
        """`expired(timer)` runs as a task in `delay_s` (None: the timer is disarmed); re-arming replaces."""
        if (handle := self._timers.pop(timer, None)) is not None:
            handle.cancel()
        if delay_s is not None:
            self._timers[timer] = asyncio.get_running_loop().call_later(max(0.0, delay_s), self._fire, timer,
                                                                         expired)

    def _fire(self, timer: Timer, expired: Work) -> None:
        self._timers.pop(timer, None)
        self.spawn(expired, timer)

    async def cancel(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _guarded(self, work: Work, *args: Any) -> None:
        try:
            await work(*args)
        except asyncio.CancelledError:
            raise
        except Exception:  # never leave the client waiting on a task that died
            log.exception("session task failed")
            await self._failed()
