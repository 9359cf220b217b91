"""Per-deployment counters the pool router reads and bumps: connections and tokens per minute, live sessions,
setup failures and cooldowns.

`DeploymentCounters` is the whole interface the router (upstream/pool.py) uses, so a fleet can back it with a
store every instance shares; `LocalDeploymentCounters` keeps them in this process (exact for one process, per
process in a fleet). Deployment names come from the config; a holder is one session's id.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

WINDOW_S = 60.0  # rpm and allowed_fails count over the last minute (rolling)


class DeploymentCounters(Protocol):
    async def take(self, deployment: str, holder: str, *, rpm: int | None, max_parallel: int | None,
                   tpm: int | None = None) -> bool:
        """Count one new Live connection of `holder` on `deployment` against `rpm` (within the last minute) and
        hold a live slot for `holder` there under `max_parallel` (a holder holds at most one slot per
        deployment: taking again only counts the connection). False, with nothing counted, when a limit is
        reached, or when the tokens reported there within the last minute (`tokens`) reached `tpm`."""
        ...

    def tokens(self, deployment: str, count: int) -> None:
        """`count` tokens Gemini reported for a session on `deployment` (its tpm); called on the hot path, so it
        queues and does no I/O."""
        ...

    async def release(self, deployment: str, holder: str) -> None:
        """`holder` left `deployment`: its slot frees (nothing happens when it held none)."""
        ...

    async def live(self, deployments: Sequence[str]) -> dict[str, int]:
        """Live slots held on each deployment (least-busy's measure)."""
        ...

    async def failed(self, deployment: str, *, allowed_fails: int, cooldown_s: float) -> bool:
        """Record one setup failure; when more than `allowed_fails` happened within the last minute, the
        deployment cools down for `cooldown_s` seconds (returns True when this failure started a cooldown)."""
        ...

    async def cooling(self, deployments: Sequence[str]) -> dict[str, float]:
        """The deployments cooling down now, with the seconds left for each."""
        ...


class LocalDeploymentCounters:
    """The counters of this process. `clock` (seconds, monotonic) is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._connections: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}
        self._holders: dict[str, set[str]] = {}
        self._failures: dict[str, deque[float]] = {}
        self._cool_until: dict[str, float] = {}

    @staticmethod
    def _recent(times: deque[float], now: float) -> deque[float]:
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        return times

    async def take(self, deployment: str, holder: str, *, rpm: int | None, max_parallel: int | None,
                   tpm: int | None = None) -> bool:
        now = self._clock()
        connections = self._recent(self._connections.setdefault(deployment, deque()), now)
        holders = self._holders.setdefault(deployment, set())
        if rpm is not None and len(connections) >= rpm:
            return False
        if tpm is not None and self._tokens_this_minute(deployment, now) >= tpm:
            return False
        if max_parallel is not None and holder not in holders and len(holders) >= max_parallel:
            return False
        connections.append(now)
        holders.add(holder)
        return True

    def tokens(self, deployment: str, count: int) -> None:
        if count > 0:
            self._tokens.setdefault(deployment, deque()).append((self._clock(), count))

    def _tokens_this_minute(self, deployment: str, now: float) -> int:
        reports = self._tokens.get(deployment)
        while reports and reports[0][0] <= now - WINDOW_S:
            reports.popleft()
        return sum(count for _, count in reports or ())

    async def release(self, deployment: str, holder: str) -> None:
        self._holders.get(deployment, set()).discard(holder)

    async def live(self, deployments: Sequence[str]) -> dict[str, int]:
        return {name: len(self._holders.get(name, ())) for name in deployments}

    async def failed(self, deployment: str, *, allowed_fails: int, cooldown_s: float) -> bool:
        now = self._clock()
        failures = self._recent(self._failures.setdefault(deployment, deque()), now)
        failures.append(now)
        if len(failures) <= allowed_fails or self._cool_until.get(deployment, 0.0) > now:
            return False
        self._cool_until[deployment] = now + cooldown_s
        failures.clear()  # a deployment back from its cooldown starts with a clean minute
        return cooldown_s > 0

    async def cooling(self, deployments: Sequence[str]) -> dict[str, float]:
        now = self._clock()
        return {name: until - now for name in deployments if (until := self._cool_until.get(name, 0.0)) > now}
