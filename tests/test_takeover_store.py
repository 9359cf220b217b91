"""The session state rows on both backends (SQLite and a throwaway PostgreSQL): the migration, fenced writes,
claims that exactly one of two racers wins, the handover request, the writer's coalescing and outage
behaviour, and the sweep of sessions nobody can take over any more."""

from __future__ import annotations

import asyncio
import time

import pytest

from livegate.accounting.database import StoreUnavailable, open_database
from livegate.accounting.store import KeyRecord, Store
from livegate.takeover.seal import Sealer
from livegate.takeover.service import STALE_S, Takeover
from livegate.takeover.store import CLAIMED, DETACHED, LIVE, RELEASED, Delete, SessionStateStore, Write
from livegate.takeover.writer import StateWriter
from livegate.translation.snapshot import Snapshot

SEALER = Sealer(None, "sk-master-store")


def snap(session_id: str = "sess_1", text: str = "hi") -> Snapshot:
    return Snapshot(session_id, "ga", None, {"id": session_id, "items": [{"type": "message", "text": text}]}, True)


def write(owner: str = "a", epoch: int = 0, status: str = LIVE, text: str = "hi", **extra: object) -> Write:
    return Write("sess_1", "hash-1", "gpt-realtime", owner, epoch, status, "lg_1", snap(text=text), **extra)  # type: ignore[arg-type]


async def test_a_store_of_the_previous_version_is_migrated(database_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import livegate.accounting.store as accounting_store

    # without the session-state migration (3); the fleet counters' (4) stays, as the key rows need its columns
    monkeypatch.setattr(accounting_store, "MIGRATIONS", [m for m in accounting_store.MIGRATIONS if m[0] != 3])
    older = Store(open_database(database_url, None))
    await older.open()  # as the previous livegate left it
    await older.create_key(KeyRecord(token_hash="h", created_at=1.0, updated_at=1.0))
    await older.close()
    monkeypatch.undo()
    store = Store(open_database(database_url, None))
    await store.open()
    try:
        assert await store.schema_version() == accounting_store.MIGRATIONS[-1][0]
        assert await store.get_key("h") is not None, "the keys are still there"
        rows = SessionStateStore(store.db, SEALER)
        assert await rows.load("sess_missing") is None
        await rows.apply([write()], time.time())
        assert (await rows.load("sess_1")) is not None
    finally:
        await store.close()


async def test_only_the_owner_at_its_epoch_writes_the_row(store: Store) -> None:
    rows = SessionStateStore(store.db, SEALER)
    now = time.time()
    assert await rows.apply([write(text="one")], now) == []
    row = await rows.load("sess_1")
    assert row is not None and row.owner == "a" and row.epoch == 0 and row.state["session"]["items"][0]["text"] == "one"
    assert row.token_hash == "hash-1" and row.slot_id == "lg_1" and row.missed == []
    claimed = await rows.claim(row, "b", now)
    assert claimed is not None and claimed.owner == "b" and claimed.epoch == 1 and claimed.status == LIVE
    assert await rows.apply([write(text="late")], now) == ["sess_1"], "the former owner is fenced off"
    assert (await rows.load("sess_1")).state["session"]["items"][0]["text"] == "one"  # type: ignore[union-attr]
    await rows.apply([Delete("sess_1", "a", 0)], now)
    assert await rows.load("sess_1") is not None, "nor may it delete the row"
    await rows.apply([Delete("sess_1", "b", 1)], now)
    assert await rows.load("sess_1") is None


async def test_of_two_racing_claims_one_wins(store: Store) -> None:
    rows = SessionStateStore(store.db, SEALER)
    await rows.apply([write(status=RELEASED)], time.time())
    row = await rows.load("sess_1")
    assert row is not None
    results = await asyncio.gather(rows.claim(row, "b", time.time()), rows.claim(row, "c", time.time()))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and (await rows.load("sess_1")).owner == winners[0].owner  # type: ignore[union-attr]


async def test_a_handover_request_stays_until_the_owner_releases(store: Store) -> None:
    rows = SessionStateStore(store.db, SEALER)
    now = time.time()
    await rows.apply([write(status=DETACHED)], now)
    row = await rows.load("sess_1")
    assert row is not None and await rows.ask_handover(row, "b", now)
    assert not await rows.ask_handover(row, "c", now), "asked once"
    assert await rows.claims_on("a") == ["sess_1"]
    await rows.apply([write(status=DETACHED, text="more")], now)
    row = await rows.load("sess_1")
    assert row is not None and row.status == CLAIMED and row.claimant == "b", "the owner's writes keep the request"
    await rows.apply([write(status=RELEASED, text="final", missed=['{"type":"response.done"}'])], now)
    row = await rows.load("sess_1")
    assert row is not None and row.status == RELEASED and row.missed == ['{"type":"response.done"}']


async def test_the_sweep_forgets_what_nobody_can_take_over(store: Store) -> None:
    rows = SessionStateStore(store.db, SEALER)
    now = time.time()
    await rows.heartbeat("alive", now, False)
    await rows.heartbeat("dead", now - 100, False)
    ops = [Write(f"sess_{name}", "h", "m", owner, 0, status, None, snap(f"sess_{name}"))
           for name, owner, status in (("live_alive", "alive", LIVE), ("live_dead", "dead", LIVE),
                                       ("released_old", "dead", RELEASED))]
    await rows.apply(ops, now - 100)
    await rows.apply([Write("sess_released_new", "h", "m", "dead", 0, RELEASED, None, snap("sess_released_new"))], now)
    await rows.sweep(now - 50)
    left = {name for name in ("live_alive", "live_dead", "released_old", "released_new")
            if await rows.load(f"sess_{name}") is not None}
    assert left == {"live_alive", "released_new"}
    assert await rows.last_seen("alive") == pytest.approx(now)
    await rows.goodbye("alive")
    assert await rows.last_seen("alive") is None


async def test_the_writer_keeps_only_the_latest_state_and_waits_for_a_release(store: Store) -> None:
    rows = SessionStateStore(store.db, SEALER)
    writer = StateWriter(rows)
    writer.start()
    try:
        for text in ("one", "two", "three"):
            writer.put(write(text=text))
        assert writer.backlog == 1, "a newer state replaces a queued one"
        assert await writer.write(write(status=RELEASED, text="four"), timeout=5)
        row = await rows.load("sess_1")
        assert row is not None and row.status == RELEASED and row.state["session"]["items"][0]["text"] == "four"
    finally:
        await writer.stop()


class FailingStore(SessionStateStore):
    def __init__(self, inner: SessionStateStore) -> None:
        super().__init__(inner.db, inner.sealer)
        self.down = True

    async def apply(self, ops: list[Write | Delete], now: float) -> list[str]:
        if self.down:
            raise StoreUnavailable("PostgreSQL: ConnectionRefusedError")
        return await super().apply(ops, now)


async def test_an_outage_keeps_the_state_queued_and_retries(store: Store) -> None:
    rows = FailingStore(SessionStateStore(store.db, SEALER))
    writer = StateWriter(rows)
    writer.start()
    try:
        writer.put(write(text="kept"))
        assert not await writer.write(write(text="newer"), timeout=0.3)
        assert writer.error is not None and writer.backlog == 1
        rows.down = False
        async with asyncio.timeout(10):
            while writer.backlog or writer.error:
                await asyncio.sleep(0.05)
        row = await rows.load("sess_1")
        assert row is not None and row.state["session"]["items"][0]["text"] == "newer"
    finally:
        await writer.stop()


async def test_a_claim_waits_for_a_dead_owner_to_be_known_dead(store: Store) -> None:
    from livegate.accounting.gate import Principal

    rows = SessionStateStore(store.db, SEALER)
    now = time.time()
    await rows.heartbeat("a", now - STALE_S + 0.5, False)  # it heartbeat a moment ago, then died
    await rows.apply([write()], now)
    takeover = Takeover(store.db, "b", grace_s=30, drain_timeout_s=5, sealer=SEALER)
    started = time.monotonic()
    claimed = await takeover.claim("sess_1", Principal("key", "hash-1"), "gpt-realtime")
    assert not isinstance(claimed, type(None)) and getattr(claimed, "owner", None) == "b"
    assert 0.3 < time.monotonic() - started < STALE_S
    refused = await takeover.claim("sess_1", Principal("key", "hash-2"), "gpt-realtime")
    assert getattr(refused, "code", None) == "session_not_found", "another key's session is not found"


class HangingStore(SessionStateStore):
    """A store whose first write hangs (a database that stopped answering mid-query)."""

    def __init__(self, inner: SessionStateStore) -> None:
        super().__init__(inner.db, inner.sealer)
        self.entered = asyncio.Event()

    async def apply(self, ops: list[Write | Delete], now: float) -> list[str]:
        if not self.entered.is_set():
            self.entered.set()
            await asyncio.sleep(3600)
        return await super().apply(ops, now)


async def test_a_shutdown_during_a_hung_write_still_writes_what_it_held(store: Store) -> None:
    """Stopping cancels the loop mid-write; the state that write held is not lost with it."""
    rows = HangingStore(SessionStateStore(store.db, SEALER))
    writer = StateWriter(rows)
    writer.start()
    writer.put(write(text="held by the hung write"))
    await asyncio.wait_for(rows.entered.wait(), 5)
    await writer.stop(timeout=5)
    row = await rows.load("sess_1")
    assert row is not None and row.state["session"]["items"][0]["text"] == "held by the hung write"


class CountingStore(SessionStateStore):
    """A store that records each transaction's operations."""

    def __init__(self, inner: SessionStateStore) -> None:
        super().__init__(inner.db, inner.sealer)
        self.transactions: list[list[str]] = []

    async def apply(self, ops: list[Write | Delete], now: float) -> list[str]:
        self.transactions.append([op.session_id for op in ops])
        return await super().apply(ops, now)


def session_write(session_id: str, text: str = "hi", *, routine: bool = True) -> Write:
    return Write(session_id, "hash-1", "gpt-realtime", "a", 0, LIVE, "lg_1", snap(session_id, text), routine=routine)


async def test_states_queued_close_together_are_written_in_one_transaction(store: Store) -> None:
    """A busy gateway's sessions reach their turn edges at all moments: the routine checkpoints they queue
    within the gathering interval go in one write, each session's latest state only."""
    rows = CountingStore(SessionStateStore(store.db, SEALER))
    writer = StateWriter(rows, gather_s=0.2)
    writer.start()
    try:
        for n in range(5):
            writer.put(session_write(f"sess_{n}", text="first"))
            await asyncio.sleep(0.01)
        assert await writer.write(session_write("sess_0", text="latest"), timeout=5)
        assert rows.transactions == [["sess_0", "sess_1", "sess_2", "sess_3", "sess_4"]]
        for n in range(5):
            row = await rows.load(f"sess_{n}")
            assert row is not None and row.state["session"]["items"][0]["text"] == ("latest" if n == 0 else "first")
    finally:
        await writer.stop()


async def test_a_batch_that_fails_part_way_writes_nothing(store: Store) -> None:
    """The statements of a batch are one transaction: a failing one undoes those before it."""
    rows = SessionStateStore(store.db, SEALER)
    await rows.apply([session_write("sess_kept")], time.time())
    with pytest.raises(StoreUnavailable):
        await store.db.batch([("DELETE FROM livegate_session_state WHERE session_id = $1", ("sess_kept",)),
                              ("INSERT INTO no_such_table VALUES ($1)", ("x",))])
    assert await rows.load("sess_kept") is not None, "the delete before the failure was rolled back"
    answers = await store.db.batch([("SELECT session_id FROM livegate_session_state WHERE session_id = $1",
                                     ("sess_kept",)), ("SELECT 1 AS one", ())])
    assert answers == [[{"session_id": "sess_kept"}], [{"one": 1}]], "each statement's rows, in order"


async def test_what_another_instance_acts_on_is_written_at_once(store: Store) -> None:
    """A client coming back must find its session, and not find one that has ended: a session's first row, a
    change of status, a deletion and a state someone waits for are not held for gathering, and they take what
    is queued with them."""
    rows = CountingStore(SessionStateStore(store.db, SEALER))
    await rows.apply([session_write("sess_ended")], time.time())
    writer = StateWriter(rows, gather_s=30)
    writer.start()
    try:
        writer.put(session_write("sess_other"))
        writer.put(Delete("sess_ended", "a", 0))
        async with asyncio.timeout(5):
            while await rows.load("sess_ended") is not None:
                await asyncio.sleep(0.01)
        assert rows.transactions[-1] == ["sess_other", "sess_ended"]
        assert await writer.write(session_write("sess_waited"), timeout=5), "written long before the 30 s"
        writer.put(session_write("sess_new", routine=False))
        async with asyncio.timeout(5):
            while await rows.load("sess_new") is None:
                await asyncio.sleep(0.01)
    finally:
        await writer.stop()


async def test_only_a_live_sessions_next_checkpoints_are_routine(store: Store) -> None:
    takeover = Takeover(store.db, "a", grace_s=30, drain_timeout_s=5, sealer=SEALER)
    keeper = takeover.keeper("hash-1", "gpt-realtime", None)
    assert keeper is not None
    queued: list[tuple[str, bool]] = []
    takeover.writer.put = lambda op: queued.append((op.status, op.routine))  # type: ignore[method-assign,union-attr]
    keeper.store(snap())  # its first row
    keeper.store(snap(text="a turn later"))
    keeper.away(True)  # the client dropped
    keeper.store(snap(text="while away"))
    keeper.away(False)  # and came back
    keeper.store(snap(text="back"))
    assert queued == [(LIVE, False), (LIVE, True), (DETACHED, False), (DETACHED, False), (LIVE, False), (LIVE, True)]
