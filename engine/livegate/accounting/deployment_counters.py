"""A pool's per-deployment counters shared by a fleet: the `DeploymentCounters` interface of the pool router
(upstream/deployment_counters.py: take, tokens, release, live, failed, cooling) backed by the counters every
instance shares (shared_limits.py: Redis, else PostgreSQL). server/app.py uses it when a shared store exists;
one process keeps upstream's LocalDeploymentCounters (rolling windows).

- `take` counts one new Live connection against the deployment's `rpm` (requests this minute of the store's clock,
  as LiteLLM counts a deployment's rpm) and its `tpm` (tokens reported this minute, `tokens()`), and gives the
  holder a lease under `max_parallel` (a holder holding one already only counts the connection). All in one
  atomic call, exact across instances; a refused take counts nothing.
- Leases live `lease_ttl_seconds` unless renewed (the accounting's renewal loop renews them with the sessions'),
  so a deployment's live count forgets the sessions of an instance that died.
- Setup failures and cooldowns stay with each instance (an instance that sees a deployment fail cools it down for
  its own sessions); sharing them is a small step on the same store if a fleet needs it.

Scopes are `deployment:<name>`: deployment names come from the config (model_info.id), never from a client.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from livegate.accounting.counters import Refused
from livegate.accounting.shared_limits import SharedLimits

WINDOW_S = 60.0


def deployment_scope(deployment: str) -> str:
    return f"deployment:{deployment}"


class SharedDeploymentCounters:
    def __init__(self, limits: SharedLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._cool_until: dict[str, float] = {}

    async def take(self, deployment: str, holder: str, *, rpm: int | None, max_parallel: int | None,
                   tpm: int | None = None) -> bool:
        scope = deployment_scope(deployment)
        answer = await self.limits.admit(holder, [(scope, rpm)] if rpm is not None else [],
                                         [(scope, tpm)] if tpm is not None else [], [(scope, max_parallel)],
                                         budgeted=False)
        if isinstance(answer, Refused):
            return False
        self.limits.standing[(scope, holder)] = answer.store
        return True

    async def release(self, deployment: str, holder: str) -> None:
        lease = (deployment_scope(deployment), holder)
        store = self.limits.standing.pop(lease, None)
        if store is not None:
            await self.limits.release(store, [lease])

    async def live(self, deployments: Sequence[str]) -> dict[str, int]:
        counts = await self.limits.live([deployment_scope(d) for d in deployments])
        return {d: counts.get(deployment_scope(d), 0) for d in deployments}

    def tokens(self, deployment: str, count: int) -> None:
        """Tokens a session on `deployment` reported (its tpm), queued without I/O."""
        if count > 0:
            self.limits.charge(None, {}, {deployment_scope(deployment): count})

    async def failed(self, deployment: str, *, allowed_fails: int, cooldown_s: float) -> bool:
        now = self._clock()
        failures = self._failures.setdefault(deployment, deque())
        while failures and failures[0] <= now - WINDOW_S:
            failures.popleft()
        failures.append(now)
        if len(failures) <= allowed_fails or self._cool_until.get(deployment, 0.0) > now:
            return False
        self._cool_until[deployment] = now + cooldown_s
        failures.clear()
        return cooldown_s > 0

    async def cooling(self, deployments: Sequence[str]) -> dict[str, float]:
        now = self._clock()
        return {d: until - now for d in deployments if (until := self._cool_until.get(d, 0.0)) > now}
