"""A pool's per-deployment counters shared by three instances (accounting/deployment_counters.py), on one real
Redis and on one PostgreSQL database: a deployment's rpm, tpm and max_parallel_requests hold exactly across the
three, least-busy sees every instance's live sessions, and a dead instance's leases lapse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from livegate.accounting.counters_redis import RedisCounters
from livegate.accounting.counters_sql import PostgresCounters
from livegate.accounting.database import open_database
from livegate.accounting.deployment_counters import SharedDeploymentCounters
from livegate.accounting.shared_limits import SharedLimits
from livegate.accounting.store import Store


@pytest.fixture(params=["redis", "postgresql"])
async def pools(request: pytest.FixtureRequest) -> AsyncIterator[list[SharedDeploymentCounters]]:
    stores: list[Store] = []
    limits: list[SharedLimits] = []
    if request.param == "redis":
        url = request.getfixturevalue("redis_service").url
        limits = [SharedLimits(RedisCounters(url=url), ttl=1.0) for _ in range(3)]
    else:
        database = request.getfixturevalue("pg_server").create_database()
        stores = [Store(open_database(database, None)) for _ in range(3)]
        for store in stores:
            await store.open()
        limits = [SharedLimits(PostgresCounters(store.db), ttl=1.0) for store in stores]
    for shared in limits:
        await shared.start()
    if request.param == "redis":
        await limits[0].shared._client.flushdb()  # type: ignore[union-attr]
    try:
        yield [SharedDeploymentCounters(shared) for shared in limits]
    finally:
        for shared in limits:
            await shared.stop()
        for store in stores:
            await store.close()


async def test_a_deployments_limits_hold_across_instances(pools: list[SharedDeploymentCounters]) -> None:
    taken = await asyncio.gather(*(pools[i % 3].take("vertex-eu", f"s{i}", rpm=None, max_parallel=2)
                                   for i in range(6)))
    assert taken.count(True) == 2
    assert await pools[2].live(["vertex-eu", "vertex-us"]) == {"vertex-eu": 2, "vertex-us": 0}
    holder = f"s{taken.index(True)}"
    await pools[taken.index(True) % 3].release("vertex-eu", holder)
    assert await pools[1].take("vertex-eu", "late", rpm=None, max_parallel=2)

    connections = await asyncio.gather(*(pools[i % 3].take("vertex-us", f"c{i}", rpm=3, max_parallel=None)
                                         for i in range(7)))
    assert connections.count(True) == 3, "rpm: new Live connections per minute"
    assert await pools[0].live(["vertex-us"]) == {"vertex-us": 3}


async def test_a_deployments_tpm_counts_reported_tokens(pools: list[SharedDeploymentCounters]) -> None:
    assert await pools[0].take("ai-studio", "s1", rpm=None, max_parallel=None, tpm=100)
    pools[1].tokens("ai-studio", 120)
    await pools[1].limits.flush()
    assert not await pools[2].take("ai-studio", "s2", rpm=None, max_parallel=None, tpm=100)
    assert await pools[2].take("ai-studio", "s3", rpm=None, max_parallel=None, tpm=500)


async def test_a_dead_instances_deployment_leases_lapse(pools: list[SharedDeploymentCounters]) -> None:
    live, dead = pools[0], pools[1]
    assert await live.take("vertex-eu", "kept", rpm=None, max_parallel=2)
    assert await dead.take("vertex-eu", "lost", rpm=None, max_parallel=2)
    assert not await pools[2].take("vertex-eu", "third", rpm=None, max_parallel=2)
    for _ in range(3):  # only the live instance renews (its accounting's renewal loop does this)
        await asyncio.sleep(0.5)
        await live.limits.renew(_standing(live))
    assert await pools[2].live(["vertex-eu"]) == {"vertex-eu": 1}
    assert await pools[2].take("vertex-eu", "third", rpm=None, max_parallel=2)


def _standing(pool: SharedDeploymentCounters) -> dict[Any, tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    by_store: dict[Any, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
    for lease, store in pool.limits.standing.items():
        by_store.setdefault(store, ([], []))[0].append(lease)
    return by_store


async def test_cooldowns_stay_with_each_instance(pools: list[SharedDeploymentCounters]) -> None:
    assert not await pools[0].failed("vertex-eu", allowed_fails=1, cooldown_s=30)
    assert await pools[0].failed("vertex-eu", allowed_fails=1, cooldown_s=30)
    assert "vertex-eu" in await pools[0].cooling(["vertex-eu", "vertex-us"])
    assert await pools[1].cooling(["vertex-eu"]) == {}
