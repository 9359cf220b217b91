"""The counters as the accounting uses them: the shared store (Redis or PostgreSQL, counters.py), the fallback
while it is out of reach, and the feed of spend and tokens.

- **Outage.** A call that fails (or takes longer than `timeout`) marks the shared store down; calls go to this
  process's own counters until a retry (every `retry_s`) succeeds. Limits then hold per instance, the outage is
  logged once and shows in readiness and `livegate_counters_up`. With `fail_closed` (general_settings.
  fail_closed_budget_enforcement) a call for a budgeted session is refused instead (`Unavailable`): nothing
  whose cost cannot be held against the shared budget starts.
- **Where a holder lives.** Leases and reservations are released in the store that granted them (a session
  admitted during an outage keeps its local lease); the store says which (`Granted.store`).
- **The feed.** Spend and tokens are reported as usage arrives, without I/O on the session's path: queued,
  merged by counter, and applied in order with the reservations that are settled (spend first, then the holds
  it replaces, so no other instance sees neither). A reservation first waits for what this instance queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from livegate.accounting.counters import Budget, Counters, CountersUnavailable, LocalCounters, Refused

log = logging.getLogger("livegate.accounting")
T = TypeVar("T")


async def _within(seconds: float, call: Awaitable[T]) -> T:
    """`call` given `seconds`, then a TimeoutError. redis-py re-raises the cancellation a timeout makes as a
    subclass of CancelledError, which `asyncio.timeout` passes on as a cancellation of the whole task; seen
    under load, it ended the session being admitted instead of counting an outage."""
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await call
    except asyncio.CancelledError:
        if scope.expired() and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise TimeoutError from None
        raise


class Unavailable(Exception):
    """The shared counters cannot be reached and fail-closed enforcement refuses what needs them."""


@dataclass(frozen=True)
class Granted:
    store: Counters  # where the leases or the reservation live


@dataclass
class _Batch:
    spend: dict[str, list[float]] = field(default_factory=dict)  # counter -> [amount, seed]
    tokens: dict[str, int] = field(default_factory=dict)
    settled: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.spend or self.tokens or self.settled)


class SharedLimits:
    def __init__(self, shared: Counters | None = None, *, ttl: float = 30.0, fail_closed: bool = False,
                 timeout: float = 2.0, retry_s: float = 1.0, on_state: Any = None) -> None:
        self.shared = shared
        self.local = LocalCounters()
        self.ttl = ttl
        self.fail_closed = fail_closed
        self.timeout = timeout
        self.retry_s = retry_s
        self.on_state = on_state  # called with True/False when the shared store comes back or goes
        self.error: str | None = None
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._batches: dict[int, _Batch] = {}  # id(store) -> what it is owed
        self._stores: dict[int, Counters] = {}
        # leases held outside a session's grant (a deployment's live connections: deployment_counters.py), renewed
        # with the sessions' by the accounting's renewal loop
        self.standing: dict[tuple[str, str], Counters] = {}
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._begun = self._ended = 0  # passes of the feed begun and ended (a flush waits for one begun after it)
        self._task: asyncio.Task[None] | None = None

    @property
    def backend(self) -> str:
        return self.shared.backend if self.shared is not None else "local"

    @property
    def up(self) -> bool:
        return self.error is None

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.shared is not None:
            try:
                await self.shared.open()
                await _within(self.timeout, self.shared.ping())
            except (CountersUnavailable, TimeoutError, OSError) as exc:
                self._down(exc)
        self._task = asyncio.create_task(self._feed(), name="livegate-counters-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # what it had not applied is still queued
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._apply_all()
        if self.shared is not None:
            with contextlib.suppress(Exception):
                await self.shared.close()

    async def readiness(self) -> dict[str, Any]:
        if self.shared is not None and self.error is not None and time.monotonic() >= self._retry_at:
            await self._call("ping")  # an outage ends when a call works again: readiness tries one
        return {"counters": self.backend, "counters_status": "connected" if self.up else "unreachable",
                "counters_error": self.error, "counters_unavailable_since": self.down_since}

    # --- the calls -----------------------------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_s
        if self.error is None:
            self.down_since = time.time()
            what = "fail_closed_budget_enforcement refuses budgeted sessions and responses" if self.fail_closed \
                else "limits are counted by each instance until it is back"
            log.error("shared counters (%s) unreachable: %s; %s", self.backend, str(exc) or "timeout", what)
            if self.on_state is not None:
                self.on_state(False)
        self.error = str(exc) or type(exc).__name__

    def _up(self) -> None:
        if self.error is not None:
            log.warning("shared counters (%s) reachable again after %.1f s", self.backend,
                        time.time() - (self.down_since or time.time()))
            self.error = self.down_since = None
            if self.on_state is not None:
                self.on_state(True)

    async def _call(self, name: str, *args: Any) -> tuple[Any, Counters | None]:
        """(result, the store that answered); (None, None) when the shared store is out of reach."""
        if self.shared is None:
            return await getattr(self.local, name)(*args), self.local
        if self.error is not None and time.monotonic() < self._retry_at:
            return None, None
        try:
            result = await _within(self.timeout, getattr(self.shared, name)(*args))
        except Exception as exc:  # unreachable, timed out, or a driver in a bad state (asyncpg when a call is
            self._down(exc)  # cut short): the same outage to the caller, and what it carried is kept for the next try
            return None, None
        self._up()
        return result, self.shared

    async def admit(self, holder: str, rpm: Sequence[tuple[str, int]], tpm: Sequence[tuple[str, int]],
                    leases: Sequence[tuple[str, int | None]], *, budgeted: bool) -> Refused | Granted:
        if not (rpm or tpm or leases) and not (budgeted and self.fail_closed and self.shared is not None):
            return Granted(self.local)  # nothing to count and nothing to prove reachable: no round trip
        result, store = await self._call("admit", holder, rpm, tpm, leases, self.ttl)
        if store is None:
            if self.fail_closed and budgeted:
                raise Unavailable(self.error or "unreachable")
            store = self.local
            result = await self.local.admit(holder, rpm, tpm, leases, self.ttl)
        return result if result is not None else Granted(store)

    async def reserve(self, holder: str, budgets: Sequence[Budget], amount: float,
                      tpm: Sequence[tuple[str, int]]) -> Refused | Granted:
        await self.flush()
        result, store = await self._call("reserve", holder, budgets, amount, tpm, self.ttl)
        if store is None:
            if self.fail_closed and budgets:
                raise Unavailable(self.error or "unreachable")
            store = self.local
            result = await self.local.reserve(holder, budgets, amount, tpm, self.ttl)
        return result if result is not None else Granted(store)

    async def release(self, store: Counters, leases: Sequence[tuple[str, str]]) -> None:
        """Free a session's leases where they were granted (a lost one lapses after the TTL)."""
        if store is self.local:
            await self.local.release(leases)
            return
        _, answered = await self._call("release", leases)
        if answered is None:
            log.warning("could not free %d lease(s) now; they lapse within %.0f s", len(leases), self.ttl)

    async def renew(self, by_store: Mapping[Counters, tuple[list[tuple[str, str]], list[tuple[str, str]]]]) -> None:
        """Keep the leases and reservations of live sessions alive (the heartbeat)."""
        for store, (leases, holds) in by_store.items():
            if store is self.local:
                await self.local.renew(leases, holds, self.ttl)
            else:
                await self._call("renew", leases, holds, self.ttl)

    async def live(self, scopes: Sequence[str]) -> dict[str, int]:
        result, store = await self._call("live", scopes)
        return result if store is not None else await self.local.live(scopes)

    # --- the feed (no I/O for the caller) ------------------------------------------------------------------

    def charge(self, store: Counters | None, spend: Mapping[str, tuple[float, float]],
               tokens: Mapping[str, int]) -> None:
        """Add spend ({counter: (amount, seed)}) and tokens ({account: n}) to the counters of `store` (the
        store holding the session's reservations; None: the shared one when up, else this process's)."""
        batch = self._batch(store or (self.shared if self.shared is not None and self.up else self.local))
        for counter, (amount, seed) in spend.items():
            entry = batch.spend.setdefault(counter, [0.0, seed])
            entry[0] += amount
        for account, count in tokens.items():
            batch.tokens[account] = batch.tokens.get(account, 0) + count
        self._wake.set()

    def settle(self, store: Counters, holds: Sequence[tuple[str, str]]) -> None:
        """Release (account, holder) reservations after the spend queued before them."""
        self._batch(store).settled.extend(holds)
        self._wake.set()

    def _batch(self, store: Counters) -> _Batch:
        self._stores[id(store)] = store
        return self._batches.setdefault(id(store), _Batch())

    async def flush(self) -> None:
        """Wait until what is queued now was applied (or given up): by a pass of the feed begun after this call.
        One under way may have taken a store's batch already: its end would leave out what was queued since (a
        response's settled hold, queued behind its spend, counted with that spend by the next reservation)."""
        if any(self._batches.values()) and self._task is not None:
            wanted = self._begun + 1
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    while self._ended < wanted:
                        self._flushed.clear()
                        await self._flushed.wait()

    async def _feed(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._begun += 1
            await self._apply_all()
            self._ended = self._begun
            self._flushed.set()

    async def _apply_all(self) -> None:
        for key in list(self._batches):
            batch = self._batches.pop(key)
            if not batch:
                continue
            store = self._stores[key]
            spend = {counter: (amount, seed) for counter, (amount, seed) in batch.spend.items()}
            if store is self.local:
                await self.local.apply(spend, batch.tokens, batch.settled)
                continue
            try:
                _, answered = await self._call("apply", spend, batch.tokens, batch.settled)
            except asyncio.CancelledError:  # stopped mid-call: stop() applies what is queued, this batch too
                self._keep_spend(store, batch)
                raise
            if answered is None:  # spend is owed to the shared counters: kept for the next try; holds lapse
                self._keep_spend(store, batch)

    def _keep_spend(self, store: Counters, batch: _Batch) -> None:
        kept = self._batch(store)
        for counter, (amount, seed) in batch.spend.items():
            entry = kept.spend.setdefault(counter, [0.0, seed])
            entry[0] += amount
