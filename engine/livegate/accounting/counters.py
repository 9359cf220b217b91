"""The counters every instance of a fleet shares: requests and tokens per minute, leases (live sessions under
`max_parallel_requests`), and budget reservations held against each period's spend.

Three stores keep them, with one interface (`Counters`) and the same semantics:
- Redis (counters_redis.py): Lua scripts, atomic per call, Redis' own clock; the optional hot store;
- PostgreSQL (counters_sql.py): one transaction per call under advisory locks, the database's clock;
- this process (`LocalCounters`, below): with neither, or while the shared store is out of reach.

Names: an *account* is a budget owner (limits.account_of: a key's hash, `team:<id>`, `user:<id>`); a *lease
scope* is what a lease counts against (`lease:<account>`, `deployment:<name>`); a *counter* is an account's
spend in one budget period (`<account>|<period end>|<record updated_at>`: an administrator's edit of a budget
or its spend, and a new period, start a new counter, seeded from the spend store). A *holder* is one session
(its leases) or one response (its reservation).

Windows are fixed minutes of the store's clock (as LiteLLM counts rpm and tpm); leases and reservations
lapse `ttl` seconds after they were last renewed, so an instance that dies cannot leak them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

WINDOW_S = 60
COUNTER_TTL_S = 2 * 86400  # a spend counter nobody touched for this long is dropped (re-seeded if used again)
_EPSILON = 1e-12  # float noise when comparing sums of dollars


class CountersUnavailable(Exception):
    """The shared store cannot be reached (the message names no secret)."""


@dataclass(frozen=True)
class Budget:
    """One budget a reservation is held against."""

    account: str
    counter: str  # the account's spend counter this period
    max_budget: float
    seed: float  # the spend as the spend store has it: a new counter starts from it


@dataclass(frozen=True)
class Refused:
    """Which limit refused: kind "rpm", "tpm", "parallel" or "budget"; `name` the account or lease scope;
    `limit`; `used`: requests or tokens this minute, live leases, or spend plus what is held."""

    kind: str
    name: str
    limit: float
    used: float


class Counters(Protocol):
    backend: str  # "redis", "postgresql", "local"

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def admit(self, holder: str, rpm: Sequence[tuple[str, int]], tpm: Sequence[tuple[str, int]],
                    leases: Sequence[tuple[str, int | None]], ttl: float) -> Refused | None:
        """Atomically: refuse if an account's requests this minute reached its rpm, its tokens this minute reached
        its tpm, or a lease scope has `limit` live leases; else count one request per rpm account and give
        `holder` a lease in every scope (a limit of None counts the lease without a ceiling)."""
        ...

    async def renew(self, leases: Sequence[tuple[str, str]], holds: Sequence[tuple[str, str]], ttl: float) -> None:
        """Keep (scope, holder) leases and (account, holder) reservations alive for another `ttl`."""
        ...

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Free (scope, holder) leases."""
        ...

    async def reserve(self, holder: str, budgets: Sequence[Budget], amount: float,
                      tpm: Sequence[tuple[str, int]], ttl: float) -> Refused | None:
        """Atomically: refuse if an account's tokens this minute reached its tpm, or if a budget's spend plus
        what is held against it plus `amount` exceeds it; else hold `amount` against every budget for
        `holder`."""
        ...

    async def apply(self, spend: Mapping[str, tuple[float, float]], tokens: Mapping[str, int],
                    settled: Sequence[tuple[str, str]]) -> None:
        """In this order: add spend to counters ({counter: (amount, seed)}; a new counter starts at its seed),
        tokens to this minute's count of accounts, then release (account, holder) reservations."""
        ...

    async def live(self, scopes: Sequence[str]) -> dict[str, int]:
        """Live leases in each scope."""
        ...

    async def budget(self, account: str, counter: str) -> tuple[float | None, float]:
        """(the counter's spend, None when it has none yet; what is held against the account)."""
        ...


def minute_of(now: float) -> int:
    return int(now // WINDOW_S)


@dataclass
class _Holds:
    amounts: dict[str, tuple[float, float]] = field(default_factory=dict)  # holder -> (amount, expires at)

    def total(self, now: float) -> float:
        for holder in [h for h, (_, until) in self.amounts.items() if until <= now]:
            del self.amounts[holder]
        return math.fsum(amount for amount, _ in self.amounts.values())


class LocalCounters:
    """The counters of this process: exact for one process, and the fallback of a shared store while it is out
    of reach (each instance then counts on its own). `clock` (UNIX seconds) is injectable for tests."""

    backend = "local"

    def __init__(self, clock: object = time.time) -> None:
        self._clock = clock
        self._rpm: dict[str, tuple[int, int]] = {}  # account -> (minute, requests)
        self._tpm: dict[str, tuple[int, int]] = {}  # account -> (minute, tokens)
        self._leases: dict[str, dict[str, float]] = {}  # scope -> holder -> expires at
        self._spend: dict[str, tuple[float, float]] = {}  # counter -> (spend, last touched)
        self._holds: dict[str, _Holds] = {}  # account -> holds

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator]

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    @staticmethod
    def _count(windows: dict[str, tuple[int, int]], account: str, minute: int) -> int:
        seen, count = windows.get(account, (minute, 0))
        return count if seen == minute else 0

    def _live(self, scope: str, now: float) -> dict[str, float]:
        holders = self._leases.setdefault(scope, {})
        for holder in [h for h, until in holders.items() if until <= now]:
            del holders[holder]
        return holders

    async def admit(self, holder: str, rpm: Sequence[tuple[str, int]], tpm: Sequence[tuple[str, int]],
                    leases: Sequence[tuple[str, int | None]], ttl: float) -> Refused | None:
        now = self._now()
        minute = minute_of(now)
        for account, limit in rpm:
            used = self._count(self._rpm, account, minute)
            if used >= limit:
                return Refused("rpm", account, limit, used)
        for account, limit in tpm:
            used = self._count(self._tpm, account, minute)
            if used >= limit:
                return Refused("tpm", account, limit, used)
        for scope, ceiling in leases:
            holders = self._live(scope, now)
            if ceiling is not None and holder not in holders and len(holders) >= ceiling:
                return Refused("parallel", scope, ceiling, len(holders))
        for account, _ in rpm:
            self._rpm[account] = (minute, self._count(self._rpm, account, minute) + 1)
        for scope, _ in leases:
            self._leases[scope][holder] = now + ttl
        return None

    async def renew(self, leases: Sequence[tuple[str, str]], holds: Sequence[tuple[str, str]], ttl: float) -> None:
        now = self._now()
        for scope, holder in leases:
            self._leases.setdefault(scope, {})[holder] = now + ttl
        for account, holder in holds:
            held = self._holds.get(account)
            if held is not None and holder in held.amounts:
                held.amounts[holder] = (held.amounts[holder][0], now + ttl)

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        for scope, holder in leases:
            self._leases.get(scope, {}).pop(holder, None)

    async def reserve(self, holder: str, budgets: Sequence[Budget], amount: float,
                      tpm: Sequence[tuple[str, int]], ttl: float) -> Refused | None:
        now = self._now()
        minute = minute_of(now)
        for account, limit in tpm:
            used = self._count(self._tpm, account, minute)
            if used >= limit:
                return Refused("tpm", account, limit, used)
        for budget in budgets:
            spend = self._spend.setdefault(budget.counter, (budget.seed, now))[0]
            held = self._holds.setdefault(budget.account, _Holds()).total(now)
            if spend + held + amount > budget.max_budget + _EPSILON:
                return Refused("budget", budget.account, budget.max_budget, spend + held)
        for budget in budgets:
            self._holds[budget.account].amounts[holder] = (amount, now + ttl)
        return None

    async def apply(self, spend: Mapping[str, tuple[float, float]], tokens: Mapping[str, int],
                    settled: Sequence[tuple[str, str]]) -> None:
        now = self._now()
        minute = minute_of(now)
        for counter, (amount, seed) in spend.items():
            self._spend[counter] = (self._spend.get(counter, (seed, now))[0] + amount, now)
        for account, count in tokens.items():
            self._tpm[account] = (minute, self._count(self._tpm, account, minute) + count)
        for account, holder in settled:
            held = self._holds.get(account)
            if held is not None:
                held.amounts.pop(holder, None)
        for counter in [c for c, (_, touched) in self._spend.items() if touched < now - COUNTER_TTL_S]:
            del self._spend[counter]

    async def live(self, scopes: Sequence[str]) -> dict[str, int]:
        now = self._now()
        return {scope: len(self._live(scope, now)) for scope in scopes}

    async def budget(self, account: str, counter: str) -> tuple[float | None, float]:
        held = self._holds.get(account)
        spend = self._spend.get(counter)
        return (spend[0] if spend else None), (held.total(self._now()) if held else 0.0)
