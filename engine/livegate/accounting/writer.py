"""The background writer: spend and spend-log rows are queued by sessions (no I/O on the audio path) and
written in batches. A database outage does not end sessions: rows stay queued (up to `max_rows`, the
oldest dropped beyond that and counted) and the batch is retried with backoff; the outage is logged once
(outage.py), shown in /health/readiness and the metrics. `stop()` flushes what is queued (SIGTERM
included, through the app's lifespan); what the store still cannot take is saved to a spill file
(spill.py) and written at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.outage import StoreOutage
from livegate.accounting.spill import write_spill
from livegate.accounting.store import Store

log = logging.getLogger("livegate.accounting")


class SpendWriter:
    def __init__(self, store: Store, *, interval: float = 0.5, max_rows: int = 10_000, batch_rows: int = 500,
                 on_flushed: Callable[[dict[str, float]], None] | None = None, outage: StoreOutage | None = None,
                 spill_dir: str | None = None) -> None:
        self.store = store
        self.outage = outage or StoreOutage()
        self.spill_dir = spill_dir  # None: nowhere to save rows at shutdown (an in-memory store)
        self.interval = interval
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self.on_flushed = on_flushed
        self._spend: dict[str, float] = {}
        self._inflight: dict[str, float] = {}  # spend being written: still counted by unflushed_spend
        self._logs: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()  # one batch at a time: a flush returns after any batch in flight
        self.dropped = 0
        self._drops_logged = False
        self.error: str | None = None  # the current outage, None when writes succeed
        self.error_since: float | None = None
        self.written_rows = 0

    # --- called by sessions (synchronous, no I/O) ----------------------------------------------------------

    def add_spend(self, token_hash: str, amount: float) -> None:
        if amount:
            self._spend[token_hash] = self._spend.get(token_hash, 0.0) + amount

    def add_log(self, row: dict[str, Any]) -> None:
        if len(self._logs) >= self.max_rows:
            self._logs.popleft()
            self._dropped_one()
        self._logs.append(row)
        if len(self._logs) >= self.batch_rows:
            self._wake.set()

    def unflushed_spend(self, token_hash: str) -> float:
        return self._spend.get(token_hash, 0.0) + self._inflight.get(token_hash, 0.0)

    @property
    def backlog(self) -> int:
        return len(self._logs) + len(self._spend)

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="livegate-spend-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and write what is queued: retrying until `timeout` while the store works, one try when
        it is known to be down (a shutdown is not held for an outage); the rest goes to a spill file."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + timeout
        tries = 0
        while self.backlog and time.monotonic() < deadline and not (tries and self.outage.down):
            tries += 1
            if not await self.flush():
                await asyncio.sleep(0.2)
        if self.backlog:
            self._spill()

    def _spill(self) -> None:
        spend, logs, rows = dict(self._spend), list(self._logs), self.backlog
        if not self.spill_dir:
            log.error("spend store unreachable at shutdown: %d queued spend rows not written (no spill folder: "
                      "the store is in memory)", rows)
            return
        try:
            path = write_spill(self.spill_dir, self.store.db.identity, spend, logs)
        except OSError as exc:
            log.error("spend store unreachable at shutdown and the spill folder %s is not writable (%s): %d queued "
                      "spend rows lost", self.spill_dir, exc.strerror or type(exc).__name__, rows)
            return
        self._spend.clear()
        self._logs.clear()
        log.warning("spend store unreachable at shutdown: %d queued spend rows saved to %s, written at the next "
                    "start", rows, path)

    def _dropped_one(self) -> None:
        self.dropped += 1
        if not self._drops_logged:  # once until writes succeed again: the count is in readiness and metrics
            self._drops_logged = True
            log.error("spend store backlog full (%d rows): dropping the oldest spend log rows", self.max_rows)

    async def _run(self) -> None:
        delay = self.interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            ok = await self.flush()
            delay = self.interval if ok else min(max(delay * 2, 0.5), 5.0)

    async def flush(self) -> bool:
        """Write one batch of what is queued; False (rows kept) when the store failed. A batch the background
        task is writing is finished first, so what was queued before the call is in the store after it."""
        async with self._writing:
            return await self._write_batch()

    async def _write_batch(self) -> bool:
        if not self._logs and not self._spend:
            return True
        spend, self._spend = self._spend, {}
        self._inflight = spend
        logs = [self._logs.popleft() for _ in range(min(len(self._logs), self.batch_rows))]
        try:
            await self.store.write_batch(spend, logs)
        except (StoreUnavailable, OSError) as exc:
            self._inflight = {}
            for token_hash, amount in spend.items():  # put back, in front of anything queued meanwhile
                self._spend[token_hash] = self._spend.get(token_hash, 0.0) + amount
            self._logs.extendleft(reversed(logs))
            while len(self._logs) > self.max_rows:
                self._logs.popleft()
                self._dropped_one()
            if self.error is None:
                self.error_since = time.time()
            self.error = str(exc) or type(exc).__name__
            self.outage.failed("writing spend", exc, f"{self.backlog} rows queued, retried with backoff")
            return False
        self.error = self.error_since = None
        self._drops_logged = False
        self.outage.recovered(self.backlog)
        self.written_rows += len(logs)
        if self.on_flushed is not None:
            self.on_flushed(spend)  # the key cache now holds it: stop counting it as in flight
        self._inflight = {}
        if len(self._logs) >= self.batch_rows:
            self._wake.set()
        return True
