"""Pools of Gemini deployments: the `model_list` entries sharing a `model_name`, in LiteLLM's words.

A new session is placed (`Pools.place`) on one deployment of its model group that can take it: not cooling
down, under its own `rpm` and `max_parallel_requests`; the strategy (routing.py) picks among those. When none
can, the group's `fallbacks` are tried in order; when nothing can, the handshake is refused (429 when
deployments are full, 503 when they are all cooling down).

The session's `Placement` opens each of its Gemini connections (the pump's OpenUpstream): on the deployment
carrying the session first, and when that fails, on the next deployment that can take it, among the
deployments serving the same model family on the same backend (its pool, then its compatible fallbacks), so
that the translation, fixed by the model's capability row, holds. A setup failure (HTTP refusal, a close
before setupComplete, no answer) counts toward that deployment's cooldown; a close with 1007 is the setup's
own fault and is tried nowhere else. A resumption handle resumes only on the deployment that issued it. When
the session core says the carrying connection failed beyond recovery (`OpenUpstream.relocate`), the other
deployments come first and the failing one last.

Counting (connections and tokens per minute, live sessions, failures, cooldowns) goes through `DeploymentCounters`
(deployment_counters.py): this process's by default, a shared store's in a fleet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from livegate.close_codes import INVALID_SETUP, NORMAL, Refusal
from livegate.config import Config, ModelRoute
from livegate.translation.capabilities import ModelTable, shipped_table
from livegate.translation.commands import OpenUpstream, UpstreamFailure
from livegate.translation.usage import UsageLedger
from livegate.upstream.base import Provider, provider_for
from livegate.upstream.connection import UpstreamConnection, open_link
from livegate.upstream.deployment_counters import DeploymentCounters, LocalDeploymentCounters
from livegate.upstream.pool_metrics import PoolMetrics
from livegate.upstream.routing import pick

log = logging.getLogger("livegate.pool")

Opened = tuple[UpstreamConnection, str | bytes]


def backend_of(route: ModelRoute) -> str:
    return "vertex" if route.provider == "vertex_ai" else "aistudio"  # the simulator speaks AI Studio


def family(route: ModelRoute, models: ModelTable | None = None) -> tuple[str, ...]:
    """What a session's translation is fixed by: the backend, the model's capability row (with the entry's
    overrides), its gemini_features and litellm_compat. Deployments agreeing on it can carry each other's
    sessions."""
    backend = backend_of(route)
    caps = (models or shipped_table()).capabilities(route.model_id, backend, route.model_info)
    caps.pop("model", None)
    return (backend, json.dumps(caps, sort_keys=True, default=str),
            json.dumps(route.gemini_features or {}, sort_keys=True, default=str), str(route.litellm_compat))


def check_pools(routes: Sequence[ModelRoute]) -> str | None:
    """A message naming the first entry that cannot share its pool (another model family or backend), or None."""
    first: dict[str, tuple[int, ModelRoute]] = {}
    for index, route in enumerate(routes):
        if route.model_name not in first:
            first[route.model_name] = (index, route)
            continue
        head_index, head = first[route.model_name]
        if family(route) != family(head):
            return (f"model_list[{index}] ({route.provider}/{route.model_id}) cannot join model_list[{head_index}] "
                    f"({head.provider}/{head.model_id}) in the pool {route.model_name!r}: a pool's deployments serve "
                    "one model family on one backend, with the same gemini_features and litellm_compat, so that a "
                    "session can move between them. Give it its own model_name and list it in "
                    "router_settings.fallbacks instead.")
    return None


def describe(failure: UpstreamFailure, setup_timeout: float) -> str:
    """A failed setup in words, for /health and the log (no secret: UpstreamFailure holds none)."""
    if failure.kind == "closed":
        return f"closed during setup ({failure.code}{': ' + failure.reason if failure.reason else ''})"
    if failure.kind == "timeout":
        return f"no answer to setup within {setup_timeout:g} s"
    if failure.kind == "other":
        return f"could not connect ({failure.detail or 'unknown error'})"
    return failure.detail or failure.kind


@dataclass
class _Skipped:
    """The deployments a placement passed over, and why (for the refusal)."""

    cooling: dict[str, float] = field(default_factory=dict)  # name -> seconds left
    full: set[str] = field(default_factory=set)


class Pools:
    """Every pool of the config, their counters and metrics. One per gateway."""

    def __init__(self, config: Config, models: ModelTable | None = None, *,
                 registry: CollectorRegistry | None = None, counters: DeploymentCounters | None = None,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.settings = config.pools
        self.counters: DeploymentCounters = counters or LocalDeploymentCounters()
        self.rng = rng or random.Random()
        self.metrics = PoolMetrics(registry)
        self.simulator_url: str | None = None  # the in-process simulator, once it runs
        self.health: dict[str, dict[str, Any]] = {}  # the latest check of each deployment
        self._families = {r.deployment: family(r, models) for r in config.routes}
        self._groups: dict[str, tuple[ModelRoute, ...]] = {}
        for route in config.routes:
            self._groups[route.model_name] = (*self._groups.get(route.model_name, ()), route)

    def group(self, name: str) -> tuple[ModelRoute, ...]:
        return self._groups.get(name, ())

    def fallbacks(self, group: str) -> tuple[str, ...]:
        fallbacks = self.settings.fallbacks
        return fallbacks.get(group, fallbacks.get("*", ()))

    def provider(self, route: ModelRoute) -> Provider:
        return provider_for(route, self.config, self.simulator_url)

    # -- placing a session -------------------------------------------------------------------------

    async def place(self, route: ModelRoute) -> Placement | Refusal:
        """A deployment for a new session asking for `route`'s model group (or one of its fallbacks), holding a
        slot there; a Refusal when none can take it."""
        holder = secrets.token_hex(8)
        trail = [route.model_name, *(g for g in self.fallbacks(route.model_name) if g != route.model_name)]
        skipped = _Skipped()
        for name in trail:
            chosen = await self.claim(self.group(name), holder, skipped=skipped)
            if chosen is None:
                continue
            if name != route.model_name:
                log.warning("no deployment of %r can take a session: it goes to the fallback %r (%s)",
                            route.model_name, name, chosen.deployment)
            kin = self._families[chosen.deployment]
            groups = [self.group(chosen.model_name), *(self.group(g) for g in trail if g != chosen.model_name)]
            compatible = [tuple(r for r in g if self._families[r.deployment] == kin) for g in groups]
            placement = Placement(self, holder, chosen, [g for g in compatible if g])
            self._count_in(chosen)
            return placement
        self.metrics.unavailable.labels(route.model_name).inc()
        names = " or ".join(repr(g) for g in trail)
        if skipped.full:
            return Refusal(429, f"Every deployment of the model {names} is at its rpm, tpm or "
                                "max_parallel_requests limit; try again shortly.", "no_deployment_available")
        wait = max(1, round(min(skipped.cooling.values(), default=self.settings.cooldown_s)))
        return Refusal(503, f"Every deployment of the model {names} is cooling down after failing; try again in "
                            f"{wait} s.", "no_deployment_available")

    async def claim(self, group: Sequence[ModelRoute], holder: str, *, exclude: set[str] | frozenset[str] = frozenset(),
                    skipped: _Skipped | None = None) -> ModelRoute | None:
        """The deployment of `group` the strategy picks among those that can take `holder` now, with its slot
        taken (a connection counted against its rpm); None when none can."""
        names = [r.deployment for r in group if r.deployment not in exclude]
        cooling = await self.counters.cooling(names)
        if skipped is not None:
            skipped.cooling.update(cooling)
        left = [r for r in group if r.deployment in names and r.deployment not in cooling]
        while left:
            live = (await self.counters.live([r.deployment for r in left])
                    if self.settings.routing_strategy == "least-busy" else {})
            chosen = pick(self.settings.routing_strategy, left, live, self.rng)
            if await self.counters.take(chosen.deployment, holder, rpm=chosen.rpm, tpm=chosen.tpm,
                                        max_parallel=chosen.max_parallel_requests):
                return chosen
            if skipped is not None:
                skipped.full.add(chosen.deployment)
            left.remove(chosen)
        return None

    def _count_in(self, route: ModelRoute) -> None:
        self.metrics.sessions.labels(route.model_name, route.deployment).inc()
        self.metrics.placements.labels(route.model_name, route.deployment).inc()

    def _count_out(self, route: ModelRoute) -> None:
        self.metrics.sessions.labels(route.model_name, route.deployment).dec()

    async def failed(self, route: ModelRoute, kind: str) -> None:
        """A setup on `route` failed (kind "setup" or "health_check"): counted, and maybe a cooldown."""
        self.metrics.failures.labels(route.deployment, kind).inc()
        settings = self.settings
        if await self.counters.failed(route.deployment, allowed_fails=settings.allowed_fails,
                                      cooldown_s=settings.cooldown_s):
            self.metrics.cooldowns.labels(route.deployment).inc()
            log.warning("deployment %s (%s) cools down for %g s: more than %d setup failures within a minute",
                        route.deployment, route.model_name, settings.cooldown_s, settings.allowed_fails)

    # -- health ------------------------------------------------------------------------------------

    async def check(self, route: ModelRoute) -> dict[str, Any]:
        """A real Live setup handshake against one deployment: its result as /health shows it."""
        timeout = self.config.timeouts.upstream_setup_s
        result: dict[str, Any] = {"model": route.model_name, "deployment": route.deployment,
                                  "upstream_model": f"{route.provider}/{route.model_id}"}
        started = time.monotonic()
        try:
            provider = self.provider(route)
            opened = await open_link(provider, {"setup": {"model": provider.setup_model()}}, (), timeout)
        except Exception as exc:  # a provider that cannot be built (no simulator, an invalid project): no details
            opened = UpstreamFailure("other", type(exc).__name__)
        result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        if isinstance(opened, tuple):
            conn, first = opened
            await conn.close()
            answered = _is_setup_complete(first)
            result["healthy"] = answered
            if not answered:
                result["error"] = "Gemini's first frame after setup was not setupComplete"
        else:
            result["healthy"] = False
            result["error"] = describe(opened, timeout)
            if not (opened.kind == "closed" and opened.code == INVALID_SETUP):
                await self.failed(route, "health_check")
        result["checked_at"] = round(time.time(), 3)
        self.health[route.deployment] = result
        self.metrics.healthy.labels(route.deployment).set(1 if result["healthy"] else 0)
        return result

    async def check_all(self, model: str | None = None) -> dict[str, Any]:
        """Check every deployment (of one model group when `model` is given) at once; LiteLLM's /health shape."""
        routes = [r for r in self.config.routes if model is None or r.model_name == model]
        results = await asyncio.gather(*(self.check(r) for r in routes))
        return summary(results)

    async def refresh_metrics(self) -> None:
        """The cooling-down gauge, read from the counters (another instance may have started a cooldown)."""
        names = [r.deployment for r in self.config.routes]
        cooling = await self.counters.cooling(names)
        for name in names:
            self.metrics.cooling.labels(name).set(1 if name in cooling else 0)

    async def check_forever(self) -> None:
        """general_settings.background_health_checks: check every deployment every health_check_interval s."""
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("background health check failed")
            await asyncio.sleep(self.settings.health_check_interval_s)


def summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    healthy = [r for r in results if r.get("healthy")]
    unhealthy = [r for r in results if not r.get("healthy")]
    return {"healthy_endpoints": healthy, "unhealthy_endpoints": unhealthy, "healthy_count": len(healthy),
            "unhealthy_count": len(unhealthy)}


class Placement:
    """Where one session's Gemini connections go: the deployment carrying it (`route`), and the others of its
    model family it may move to. The pump hands it each OpenUpstream."""

    def __init__(self, pools: Pools, holder: str, route: ModelRoute, groups: list[tuple[ModelRoute, ...]]) -> None:
        self.pools = pools
        self.holder = holder
        self.route = route  # the deployment carrying the session now
        self.admitted = route  # the one it started on (its translation and price were set for it)
        self._groups = groups  # the deployments it may move to, by model group: its own group first
        self._counted = True  # the admission counted the session's first connection on `route`
        self._trying: set[str] = set()  # deployments where a connection is being tried (a slot held there)
        self._released = False
        self._tokens = 0  # the session's tokens already counted against its deployments' tpm
        # How many times the session core may move the session to another deployment in a row.
        self.alternatives = max(0, sum(len(g) for g in groups) - 1)

    def provider(self) -> Provider:
        """The provider of the deployment carrying the session now (for its calls beside the Live connection)."""
        return self.pools.provider(self.route)

    async def open(self, command: OpenUpstream, setup_timeout: float) -> Opened | UpstreamFailure:
        """Carry out `command` on the best deployment that answers its setup; the last failure when none does."""
        tried: set[str] = set()
        failure: UpstreamFailure | None = None
        while (candidate := await self._next(command, tried)) is not None:
            provider = self.pools.provider(candidate)
            opened = await open_link(provider, _with_model(command.setup, provider.setup_model()), command.then,
                                     setup_timeout)
            if isinstance(opened, tuple):
                await self._move(candidate)
                return opened
            failure = opened
            if candidate is not self.route:
                self._trying.discard(candidate.deployment)
                await self.pools.counters.release(candidate.deployment, self.holder)
            if failure.kind == "closed" and failure.code == INVALID_SETUP:
                return failure  # Gemini refused the setup itself: any deployment would
            log.info("deployment %s could not open a session (%s): %s", candidate.deployment, command.mode,
                     describe(failure, setup_timeout))  # counted; its cooldown, if it comes, is a warning
            await self.pools.failed(candidate, "setup")
        return failure or UpstreamFailure(
            "unreachable", "Gemini Live: no deployment of this model can take the session now (all are cooling "
                           "down or at their limits).")

    async def _next(self, command: OpenUpstream, tried: set[str]) -> ModelRoute | None:
        """The next deployment to try, its connection counted; None when there is none left."""
        current = self.route
        if current.deployment not in tried and (command.mode == "handle" or not command.relocate):
            tried.add(current.deployment)
            if await self._take_current(command):
                return current
        if command.mode == "handle":
            return None  # a resumption handle resumes only where it was issued
        for group in self._groups:
            chosen = await self.pools.claim(group, self.holder, exclude=tried | {current.deployment})
            if chosen is not None:
                tried.add(chosen.deployment)
                self._trying.add(chosen.deployment)
                return chosen
        if current.deployment not in tried:  # relocating: the deployment that failed comes last
            tried.add(current.deployment)
            if await self._take_current(command):
                return current
        return None

    async def _take_current(self, command: OpenUpstream) -> bool:
        current, counters = self.route, self.pools.counters
        if command.first and self._counted:
            self._counted = False
            return True
        resuming = command.mode == "handle"  # the same Gemini session, continued where it runs
        if not resuming and await counters.cooling([current.deployment]):
            return False
        # A resumption is a new connection (rpm) but no new work: the deployment's tpm does not refuse it.
        return await counters.take(current.deployment, self.holder, rpm=current.rpm,
                                   tpm=None if resuming else current.tpm, max_parallel=current.max_parallel_requests)

    async def _move(self, route: ModelRoute) -> None:
        if route is self.route:
            return
        self._trying.discard(route.deployment)
        if self._released:  # the session ended while this connection opened: the pump closes it
            await self.pools.counters.release(route.deployment, self.holder)
            return
        old, self.route = self.route, route
        await self.pools.counters.release(old.deployment, self.holder)
        self.pools._count_out(old)
        self.pools._count_in(route)
        log.warning("session moved from deployment %s to %s", old.deployment, route.deployment)

    def watch(self, ledger: UsageLedger) -> None:
        """Count the session's tokens against the `tpm` of the deployment carrying it, as Gemini reports them."""
        previous = ledger.on_change

        def changed() -> None:
            if previous is not None:
                previous()
            total = ledger.current().total_tokens
            if total > self._tokens:
                self.pools.counters.tokens(self.route.deployment, total - self._tokens)
                self._tokens = total

        ledger.on_change = changed

    def lost(self, code: int) -> None:
        """The connection carrying the session closed with `code` (not a normal end): counted."""
        if code != NORMAL:
            self.pools.metrics.failures.labels(self.route.deployment, "lost").inc()

    async def release(self) -> None:
        """The session ended: its slot frees, and those of connections it was still trying."""
        if not self._released:
            self._released = True
            for name in [self.route.deployment, *self._trying]:
                await self.pools.counters.release(name, self.holder)
            self._trying.clear()
            self.pools._count_out(self.route)


def _is_setup_complete(frame: str | bytes) -> bool:
    try:
        message = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and "setupComplete" in message


def _with_model(setup: dict[str, Any], model: str) -> dict[str, Any]:
    """The setup message naming `model` (each deployment has its own `setup.model`: project, region)."""
    body = setup.get("setup")
    if not isinstance(body, dict) or body.get("model") == model:
        return setup
    return {**setup, "setup": {**body, "model": model}}
