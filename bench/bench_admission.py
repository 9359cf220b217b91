"""What admission costs: the latency limits, leases and budget reservations add to a session's start and to each
response, with the shared counters on Redis, on PostgreSQL only, and in this process, in one run.

    python bench/bench_admission.py [--rounds N] [--trials T]

Starts a throwaway redis-server and PostgreSQL (as the tests do: tests/fakes/) on free loopback ports. Each
trial measures, for each store in turn (the order rotated, so a busy neighbour hits them alike):
- session start: `Grant.check_admission` of a key under rpm_limit, tpm_limit, max_parallel_requests and a budget,
  with a team and a user under limits too (one atomic call for the nine counters), against the same admission of a
  key with no limit (which makes no counter call): the difference is what the limits add;
- response: `Grant.reserve_response` (the worst case held against the key's, team's and user's budgets, tpm checked),
  the time a response waits before its turn goes to Gemini, then its settlement queued.
Figures are per operation (median over the trials, spread min-max), and as ratios to the in-process store.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livegate.accounting.counters import Counters
from livegate.accounting.counters_redis import RedisCounters
from livegate.accounting.counters_sql import PostgresCounters
from livegate.accounting.database import open_database
from livegate.accounting.gate import Accounting, Grant, Principal
from livegate.accounting.owners import TeamRecord, UserRecord
from livegate.accounting.prices import PriceTable
from livegate.accounting.shared_limits import SharedLimits
from livegate.accounting.store import KeyRecord, Store
from tests.fakes.postgres import postgres_bin, postgres_server
from tests.fakes.redis import redis_bin, redis_server

LIMITS = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_parallel_requests": 10**6, "max_budget": 10**6}


async def _accounting(database_url: str | None, counters: Counters | None) -> Accounting:
    store = Store(open_database(database_url, None))
    accounting = Accounting(store, PriceTable.load(), master_key="sk-bench", limits=SharedLimits(counters))
    await accounting.start()
    return accounting


def _principal(limited: bool) -> Principal:
    settings: dict[str, Any] = LIMITS if limited else {}
    key = KeyRecord(token_hash=("1" if limited else "2") * 64, key_alias="bench", team_id="t" if limited else None,
                    user_id="u" if limited else None, **settings)
    team = TeamRecord("t", **settings) if limited else None
    user = UserRecord("u", **settings) if limited else None
    return Principal("key", key.token_hash, key, None, team, user)


async def _admit(accounting: Accounting, principal: Principal) -> Grant:
    grant = Grant(accounting, principal, "/v1/realtime", {}, None, True, None)
    refusal = await grant.check_admission("gpt-realtime", "gemini-3.8-live", None)
    assert refusal is None, refusal
    return grant


async def _timed(rounds: int, work: Callable[[], Awaitable[Any]]) -> float:
    """Milliseconds per call of `work`."""
    start = time.perf_counter()
    for _ in range(rounds):
        await work()
    return (time.perf_counter() - start) / rounds * 1000


async def _measure(accounting: Accounting, rounds: int) -> dict[str, float]:
    limited, free = _principal(True), _principal(False)
    grants: list[Grant] = []

    async def start(principal: Principal) -> None:
        grants.append(await _admit(accounting, principal))

    with_limits = await _timed(rounds, lambda: start(limited))
    without = await _timed(rounds, lambda: start(free))
    reserving = grants[0]
    number = 0

    async def respond() -> None:
        nonlocal number
        number += 1
        assert await reserving.reserve_response(number, 64) is None
        reserving.settle_responses((number,))

    response = await _timed(rounds, respond)
    for grant in grants:
        await grant.release_limits()
    await accounting.store.release_sessions([g.session_id for g in grants])
    return {"start": with_limits, "added": with_limits - without, "response": response}


async def run(rounds: int, trials: int) -> None:
    if redis_bin() is None or postgres_bin() is None:
        raise SystemExit("needs redis-server and PostgreSQL (apt-get install redis-server postgresql)")
    with redis_server() as redis, postgres_server() as pg:
        stores = {
            "in-process": await _accounting(None, None),
            "postgresql": await _accounting(database := pg.create_database(), None),
            "redis": await _accounting(database, RedisCounters(url=redis.url)),
        }
        stores["postgresql"].limits = SharedLimits(PostgresCounters(stores["postgresql"].store.db))
        await stores["postgresql"].limits.start()
        for accounting in stores.values():  # warm up: connections, scripts, tables
            await _measure(accounting, 20)
        names = list(stores)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for trial in range(trials):
            for name in names[trial % 3:] + names[:trial % 3]:
                results[name].append(await _measure(stores[name], rounds))
        for accounting in stores.values():
            await accounting.stop()
    print(f"admission latency, {rounds} operations x {trials} trials (median, spread min-max; ratio to in-process)")
    base = {metric: statistics.median(r[metric] for r in results["in-process"]) for metric in ("start", "response")}
    for metric, label in (("start", "session start, limits on"), ("added", "  of which the limits"),
                          ("response", "per response (reserve)")):
        print(f"{label}:")
        for name in names:
            values = [r[metric] for r in results[name]]
            ratio = ""
            if metric != "added":
                ratios = [v / base[metric] for v in values]
                ratio = f"  x{statistics.median(ratios):.1f} ({min(ratios):.1f}-{max(ratios):.1f})"
            print(f"  {name:<11} {statistics.median(values):7.3f} ms ({min(values):.3f}-{max(values):.3f}){ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(run(args.rounds, args.trials))


if __name__ == "__main__":
    main()
