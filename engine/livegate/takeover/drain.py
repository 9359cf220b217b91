"""SIGTERM drains before the process stops.

uvicorn answers SIGTERM by closing its listening socket at once and sending 1012 to every WebSocket in the
middle of whatever it was doing. At startup (in each worker process) livegate puts `DrainOnSigterm` in front
of uvicorn's own SIGTERM handler: the first SIGTERM drains while the listener still answers (readiness says
503 and new sessions are refused with HTTP 503, so the balancer takes this instance out and retries
elsewhere; every session is stored and closed with 1012 at its next rest: `Takeover.drain`), then hands the
signal to uvicorn, whose shutdown finds nothing left to cut. A second SIGTERM stops at once, as uvicorn does.
Only uvicorn's handler is wrapped: under another server, SIGTERM is that server's business.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

log = logging.getLogger("livegate.takeover")

Handler = Callable[[int, FrameType | None], Any]


class DrainOnSigterm:
    def __init__(self, drain: Callable[[], Awaitable[None]], previous: Handler) -> None:
        self.drain = drain
        self.previous = previous
        self.loop = asyncio.get_running_loop()
        self.started = False
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def install(cls, drain: Callable[[], Awaitable[None]]) -> DrainOnSigterm | None:
        """Wrap uvicorn's SIGTERM handler (None when there is none to wrap: not the main thread, not uvicorn)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGTERM)
        owner = getattr(previous, "__self__", None)
        if not callable(previous) or not (isinstance(owner, DrainOnSigterm) or _is_uvicorn_server(owner)):
            return None
        handler = cls(drain, previous)
        signal.signal(signal.SIGTERM, handler.on_signal)
        return handler

    def uninstall(self) -> None:
        if threading.current_thread() is threading.main_thread() and \
                getattr(signal.getsignal(signal.SIGTERM), "__self__", None) is self:
            signal.signal(signal.SIGTERM, self.previous)

    def on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.started:
            self.previous(sig, frame)  # a second SIGTERM: stop now
            return
        self.started = True
        log.info("SIGTERM: draining before shutdown")
        self.loop.call_soon_threadsafe(self._start, sig)

    def _start(self, sig: int) -> None:
        self.task = self.loop.create_task(self._drain_then_stop(sig))

    async def _drain_then_stop(self, sig: int) -> None:
        try:
            await self.drain()
        except Exception:
            log.exception("the drain failed; shutting down")
        self.previous(sig, None)


def _is_uvicorn_server(owner: Any) -> bool:
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - livegate depends on uvicorn
        return False
    return isinstance(owner, uvicorn.Server)
