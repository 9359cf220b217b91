"""The counters a fleet shares (accounting/counters*.py), on each store: three clients of one real Redis, three of
one real PostgreSQL database, and this process's own. Every limit is exact under concurrent calls from the three,
leases and reservations lapse after their TTL unless renewed, and a new spend counter starts from its seed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import pytest

from livegate.accounting.counters import Budget, Counters, LocalCounters, Refused
from livegate.accounting.counters_redis import RedisCounters
from livegate.accounting.counters_sql import PostgresCounters
from livegate.accounting.database import open_database
from livegate.accounting.shared_limits import Granted, SharedLimits
from livegate.accounting.store import Store
from tests.fakes.postgres import PostgresServer
from tests.fakes.redis import RedisServer


@pytest.fixture(params=["redis", "postgresql", "local"])
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[list[Counters]]:
    """Three clients of one store, as three instances hold them (the local store: one, shared by the three)."""
    closers: list[Callable[[], Any]] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_service")
        # a loaded test machine can take over the 1 s default to connect 20 requests at once (timeouts: own tests)
        clients: list[Counters] = [RedisCounters(url=server.url, timeout=5.0) for _ in range(3)]
        for client in clients:
            await client.open()
            closers.append(client.close)
        await clients[0]._client.flushdb()  # type: ignore[attr-defined]
    elif request.param == "postgresql":
        pg: PostgresServer = request.getfixturevalue("pg_server")
        url = pg.create_database()
        stores = [Store(open_database(url, None)) for _ in range(3)]
        for store in stores:
            await store.open()
            closers.append(store.close)
        clients = [PostgresCounters(store.db) for store in stores]
    else:
        local = LocalCounters()
        clients = [local, local, local]
    try:
        yield clients
    finally:
        for close in closers:
            await close()


async def test_rpm_is_exact_across_instances(fleet: list[Counters]) -> None:
    answers = await asyncio.gather(*(fleet[i % 3].admit(f"s{i}", [("key-a", 4)], [], [], 30) for i in range(12)))
    assert sum(a is None for a in answers) == 4
    refused = [a for a in answers if a is not None]
    assert {(r.kind, r.name, r.limit, r.used) for r in refused} == {("rpm", "key-a", 4, 4)}
    assert await fleet[0].admit("other", [("key-b", 4)], [], [], 30) is None  # another account's own minute


async def test_tpm_counts_reported_tokens_across_instances(fleet: list[Counters]) -> None:
    await fleet[0].apply({}, {"team:t": 60}, [])
    assert await fleet[1].admit("s1", [], [("team:t", 100)], [], 30) is None
    await fleet[2].apply({}, {"team:t": 40}, [])
    assert await fleet[1].admit("s2", [], [("team:t", 100)], [], 30) == Refused("tpm", "team:t", 100, 100)
    assert await fleet[0].reserve("r1", [], 0.0, [("team:t", 100)], 30) == Refused("tpm", "team:t", 100, 100)
    assert await fleet[0].reserve("r2", [], 0.0, [("team:t", 101)], 30) is None


async def test_leases_are_exact_and_released(fleet: list[Counters]) -> None:
    answers = await asyncio.gather(*(fleet[i % 3].admit(f"s{i}", [], [], [("lease:k", 3), ("lease:team:t", None)], 30)
                                     for i in range(9)))
    admitted = [f"s{i}" for i, a in enumerate(answers) if a is None]
    assert len(admitted) == 3
    assert await fleet[1].live(["lease:k", "lease:team:t", "lease:none"]) == {"lease:k": 3, "lease:team:t": 3,
                                                                             "lease:none": 0}
    assert await fleet[1].admit("late", [], [], [("lease:k", 3)], 30) == Refused("parallel", "lease:k", 3, 3)
    await fleet[2].release([("lease:k", admitted[0]), ("lease:team:t", admitted[0])])
    assert await fleet[1].admit("late", [], [], [("lease:k", 3)], 30) is None
    assert await fleet[0].admit(admitted[1], [], [], [("lease:k", 3)], 30) is None  # a holder's own lease: no new one


async def test_a_lease_lapses_after_its_ttl_unless_renewed(fleet: list[Counters]) -> None:
    assert await fleet[0].admit("kept", [], [], [("lease:k", 2)], 1.0) is None
    assert await fleet[1].admit("dead", [], [], [("lease:k", 2)], 1.0) is None
    for _ in range(3):
        await asyncio.sleep(0.5)
        await fleet[0].renew([("lease:k", "kept")], [], 1.0)  # "dead"'s instance was killed: no renewal
    assert await fleet[2].live(["lease:k"]) == {"lease:k": 1}
    assert await fleet[2].admit("new", [], [], [("lease:k", 2)], 1.0) is None


async def test_reservations_hold_a_budget_across_instances(fleet: list[Counters]) -> None:
    budget = Budget("key-a", "key-a|0|1", 1.0, 0.2)
    answers = await asyncio.gather(*(fleet[i % 3].reserve(f"r{i}", [budget], 0.3, [], 30) for i in range(20)))
    granted = [f"r{i}" for i, a in enumerate(answers) if a is None]
    assert len(granted) == 2  # 0.2 spent + 2 x 0.3 held; a third would make 1.1
    refusal = next(a for a in answers if a is not None)
    assert refusal.kind == "budget" and refusal.name == "key-a" and refusal.used == pytest.approx(0.8)
    # the first response cost 0.1: its spend lands and its hold goes, in one step
    await fleet[1].apply({"key-a|0|1": (0.1, 99.0)}, {}, [("key-a", granted[0])])  # the seed of an existing counter
    assert await fleet[2].budget("key-a", "key-a|0|1") == (pytest.approx(0.3), pytest.approx(0.3))
    assert await fleet[0].reserve("r-next", [budget], 0.3, [], 30) is None  # 0.3 + 0.3 + 0.3
    assert (await fleet[0].reserve("r-over", [budget], 0.3, [], 30)).kind == "budget"  # type: ignore[union-attr]


async def test_a_reservation_must_fit_every_budget(fleet: list[Counters]) -> None:
    key, team = Budget("k", "k|0|1", 10.0, 0.0), Budget("team:t", "team:t|0|1", 1.0, 0.9)
    refused = await fleet[0].reserve("r1", [key, team], 0.2, [], 30)
    assert refused == Refused("budget", "team:t", 1.0, pytest.approx(0.9))
    assert await fleet[1].budget("k", "k|0|1") == (0.0, 0.0)  # nothing was held against the key either
    assert await fleet[1].reserve("r2", [key, team], 0.1, [], 30) is None
    assert (await fleet[2].budget("k", "k|0|1"))[1] == pytest.approx(0.1)


async def test_a_hold_lapses_after_its_ttl_unless_renewed(fleet: list[Counters]) -> None:
    budget = Budget("k", "k|0|1", 1.0, 0.0)
    assert await fleet[0].reserve("kept", [budget], 0.4, [], 1.0) is None
    assert await fleet[1].reserve("dead", [budget], 0.4, [], 1.0) is None
    assert (await fleet[2].reserve("refused", [budget], 0.4, [], 1.0)).kind == "budget"  # type: ignore[union-attr]
    for _ in range(3):
        await asyncio.sleep(0.5)
        await fleet[0].renew([], [("k", "kept")], 1.0)
    assert (await fleet[2].budget("k", "k|0|1"))[1] == pytest.approx(0.4)
    assert await fleet[2].reserve("now", [budget], 0.4, [], 1.0) is None


async def test_a_new_counter_starts_from_its_seed(fleet: list[Counters]) -> None:
    await fleet[0].apply({"k|0|1": (0.25, 2.0)}, {}, [])  # unknown to the store: the seed plus the charge
    await fleet[1].apply({"k|0|1": (0.25, 7.0)}, {}, [])  # known now: the seed is ignored
    assert (await fleet[2].budget("k", "k|0|1"))[0] == pytest.approx(2.5)
    assert (await fleet[2].budget("k", "k|0|2"))[0] is None  # a new period's counter: not started yet


# --- the feed (shared_limits.py): spend and settled holds queued by sessions, applied in the background ----------


class _RoundTrips(LocalCounters):
    """This process's counters standing in for a shared store whose applies take a round trip; the first one
    waits for `go`."""

    backend = "round-trips"

    def __init__(self) -> None:
        super().__init__()
        self.applying, self.go = asyncio.Event(), asyncio.Event()

    async def apply(self, spend: Mapping[str, tuple[float, float]], tokens: Mapping[str, int],
                    settled: Sequence[tuple[str, str]]) -> None:
        self.applying.set()
        await self.go.wait()
        await asyncio.sleep(0)  # the answer comes back
        await super().apply(spend, tokens, settled)


async def test_a_reservation_waits_for_the_hold_settled_while_the_spend_was_being_applied() -> None:
    """A response's usage is charged, the feed starts applying it, then the response's hold is settled (queued
    behind it, for the next pass). The session's next reservation must not count that hold with that spend: it
    waits for the pass that releases the hold, not only for the one under way."""
    store = _RoundTrips()
    limits = SharedLimits(store)
    await limits.start()
    try:
        budget = Budget("k", "k|0|1", 1.0, 0.0)
        assert await limits.reserve("s#1", [budget], 0.6, []) == Granted(store)
        limits.charge(None, {"k|0|1": (0.5, 0.0)}, {})  # response 1's usage (turnComplete)
        await store.applying.wait()
        limits.settle(store, [("k", "s#1")])  # ... then its reservation is settled
        second = asyncio.create_task(limits.reserve("s#2", [budget], 0.4, []))
        await asyncio.sleep(0)
        store.go.set()
        assert await second == Granted(store)  # 0.5 spent + 0.4: the 0.6 held for response 1 is gone
        assert await store.budget("k", "k|0|1") == (pytest.approx(0.5), pytest.approx(0.4))
    finally:
        await limits.stop()


class _Stalled(LocalCounters):
    """A shared store that stops answering admissions, and whose driver, like redis-py's (wait_for2), re-raises
    the timeout's cancellation as a subclass of CancelledError."""

    backend = "stalled"

    class CancelledWithResult(asyncio.CancelledError):
        pass

    async def admit(self, *args: Any) -> Any:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise _Stalled.CancelledWithResult from None


async def test_a_stalled_store_is_an_outage_not_a_cancelled_session() -> None:
    limits = SharedLimits(_Stalled(), timeout=0.05)
    await limits.start()
    try:
        answer = await limits.admit("s#1", [("k", 10)], [], [], budgeted=False)
        assert isinstance(answer, Granted) and answer.store is limits.local, "counted here during the outage"
        assert not limits.up and limits.error
    finally:
        await limits.stop()
