"""The background writer of session state: sessions queue their latest snapshot (no I/O on the audio path) and
one task writes what is queued, in one transaction. Only the latest state of a session matters, so a newer
one replaces a queued one. The task gathers for `gather_s` (50 ms) after a first state is queued, so a busy
gateway, whose sessions each queue two or three states a turn, writes a few times a second rather than at
every session's turn edge: each write is a trip to the database (SQLite: to its thread), whose cost under
load is the hand-over, not the rows. Only a live session's routine checkpoints wait (`Write.routine`): its
first row, a change of status, its end (the row deleted) and a state someone waits for are written at once,
with whatever is queued, as another instance acts on them (a client coming back must find its session, and
must not find one that has ended). A database outage does not end sessions: what is queued stays queued
(one row per session at most), retried with backoff, and the outage is logged once. `write` waits for one
session's row (a drained session is closed only after its state is stored)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from livegate.accounting.database import StoreUnavailable
from livegate.takeover.store import Delete, SessionStateStore, Write

log = logging.getLogger("livegate.takeover")

Op = Write | Delete


class StateWriter:
    def __init__(self, store: SessionStateStore, *, on_fenced: Callable[[str], None] | None = None,
                 gather_s: float = 0.05) -> None:
        self.store = store
        self.gather_s = gather_s
        self.on_fenced = on_fenced
        self._queued: dict[str, Op] = {}
        self._waiting: dict[str, list[asyncio.Future[bool]]] = {}
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # queued: what is not a routine checkpoint (no gathering)
        self._task: asyncio.Task[None] | None = None
        self.error: str | None = None  # the current outage, None when writes succeed
        self.written = 0

    @property
    def backlog(self) -> int:
        return len(self._queued)

    def put(self, op: Op) -> None:
        """Queue a session's latest state (or its end); returns at once."""
        self._queued[op.session_id] = op
        self._wake.set()
        if isinstance(op, Delete) or not op.routine or op.session_id in self._waiting:
            self._urgent.set()

    async def write(self, op: Op, timeout: float) -> bool:
        """Queue `op` and wait until it (or a newer state of the session) is written: False when the store
        failed for `timeout` seconds, or the row is another owner's now."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(op.session_id, []).append(done)
        self.put(op)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(done)
        except TimeoutError:
            return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livegate-state-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and write what is queued (retrying until `timeout`)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + timeout
        while self._queued and time.monotonic() < deadline:
            if not await self.flush():
                await asyncio.sleep(0.2)
        if self._queued:
            log.error("session store unreachable at shutdown: %d sessions' state not written", len(self._queued))
        for waiting in self._waiting.values():
            for done in waiting:
                if not done.done():
                    done.set_result(False)
        self._waiting.clear()

    async def _run(self) -> None:
        delay = 0.0
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.gather_s):
                        await self._urgent.wait()
            self._wake.clear()
            self._urgent.clear()
            if await self.flush():
                delay = 0.0
            else:
                delay = min(max(delay * 2, 0.25), 5.0)
                await asyncio.sleep(delay)
                self._wake.set()

    async def flush(self) -> bool:
        """Write what is queued; False (kept queued) when the store failed."""
        if not self._queued:
            return True
        batch, self._queued = self._queued, {}
        try:
            fenced = set(await self.store.apply(list(batch.values()), time.time()))
        except asyncio.CancelledError:  # `stop` cancelled the loop mid-write: what it held is written by `stop`
            self._requeue(batch)
            raise
        except (StoreUnavailable, OSError) as exc:
            self._requeue(batch)
            if self.error is None:
                log.error("session store write failed, will retry (%d sessions queued): %s", len(self._queued), exc)
            self.error = str(exc)
            return False
        if self.error is not None:
            log.warning("session store writes recovered")
            self.error = None
        self.written += len(batch)
        for session_id in batch:
            if session_id in self._queued:
                continue  # a newer state is queued: whoever waits, waits for that one
            for done in self._waiting.pop(session_id, ()):
                if not done.done():
                    done.set_result(session_id not in fenced)
        for session_id in fenced:
            log.warning("session %s: another instance took it over; this one's state is not written", session_id)
            if self.on_fenced is not None:
                self.on_fenced(session_id)
        return True

    def _requeue(self, batch: dict[str, Op]) -> None:
        for session_id, op in batch.items():
            self._queued.setdefault(session_id, op)  # a state queued meanwhile is newer
