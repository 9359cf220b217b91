"""The spend store, the same tests on SQLite and on a real PostgreSQL server: migrations, keys, budgets,
session slots, rate windows, spend rows, client secrets, and the background writer's outage handling."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from livegate.accounting.database import StoreUnavailable, open_database
from livegate.accounting.keys import hash_key
from livegate.accounting.store import MIGRATIONS, STALE_SESSION_SECONDS, KeyRecord, SecretRecord, Store
from livegate.accounting.writer import SpendWriter

NOW = 1_800_000_000.0


def _key(name: str, **fields: Any) -> KeyRecord:
    return KeyRecord(token_hash=hash_key(name), key_alias="alias-" + name[-6:], created_at=NOW, updated_at=NOW,
                     **fields)


def _row(request_id: str, key: str, **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "api_key": hash_key(key), "model": "gpt-realtime", "route": "/v1/realtime",
            "start_time": NOW, "end_time": NOW + 5, "spend": 0.25, "prompt_tokens": 10, "completion_tokens": 20,
            "total_tokens": 30, "request_tags": json.dumps(["a"]), "metadata": "{}", **fields}


async def test_migrations_apply_once_and_reopen(store: Store, database_url: str) -> None:
    latest = MIGRATIONS[-1][0]
    assert await store.schema_version() == latest
    again = Store(open_database(database_url, None))
    await again.open()  # a second instance (or a restart) finds the schema in place
    try:
        assert await again.schema_version() == latest
    finally:
        await again.close()


async def test_key_lifecycle_stores_only_the_hash(store: Store) -> None:
    await store.create_key(_key("sk-alpha-secret-value", models=["m1"], max_budget=1.5, tags=["t"]))
    found = await store.get_key(hash_key("sk-alpha-secret-value"))
    assert found is not None and found.models == ["m1"] and found.max_budget == 1.5 and found.tags == ["t"]
    async with store.db.transaction() as tx:
        rows = await tx.fetch("SELECT * FROM livegate_keys")
    assert "sk-alpha-secret-value" not in json.dumps(rows, default=str)
    updated = await store.update_key(found.token_hash, {"max_budget": 2.0, "models": ["m1", "m2"]}, NOW + 1)
    assert updated is not None and updated.max_budget == 2.0 and updated.models == ["m1", "m2"]
    assert [k.key_alias for k in await store.list_keys()] == ["alias--value"]
    assert await store.delete_keys([found.token_hash], NOW + 2) == [found.token_hash]
    assert await store.delete_keys([found.token_hash], NOW + 3) == []  # already deleted
    gone = await store.get_key(found.token_hash)
    assert gone is not None and gone.deleted_at == NOW + 2
    assert await store.list_keys() == []
    assert await store.update_key(found.token_hash, {"max_budget": 3.0}, NOW + 4) is None


async def test_budget_resets_when_its_period_ends(store: Store) -> None:
    await store.create_key(_key("sk-budget-key-000000", max_budget=1.0, budget_duration="1h",
                                budget_reset_at=NOW + 3600))
    token = hash_key("sk-budget-key-000000")
    await store.write_batch({token: 0.75}, [])
    assert (await store.get_key(token, NOW + 10)).spend == pytest.approx(0.75)
    after = await store.get_key(token, NOW + 3 * 3600 + 5)
    assert after.spend == 0 and after.budget_reset_at == NOW + 4 * 3600


async def test_session_slots_are_limited_and_stale_ones_lapse(store: Store) -> None:
    await store.create_key(_key("sk-slots-key-0000000", max_parallel_requests=2))
    token = hash_key("sk-slots-key-0000000")
    assert await store.acquire_session(token, "s1", "i1", "m", "r", 2, NOW)
    assert await store.acquire_session(token, "s2", "i2", "m", "r", 2, NOW)
    assert not await store.acquire_session(token, "s3", "i1", "m", "r", 2, NOW)
    await store.release_sessions(["s1"])
    assert await store.acquire_session(token, "s3", "i1", "m", "r", 2, NOW)
    # a dead instance stops heartbeating: its sessions stop counting
    await store.heartbeat(["s3"], NOW + STALE_SESSION_SECONDS + 1)
    assert await store.acquire_session(token, "s4", "i1", "m", "r", 2, NOW + STALE_SESSION_SECONDS + 2)
    assert not await store.acquire_session(token, "s5", "i1", "m", "r", 2, NOW + STALE_SESSION_SECONDS + 2)


async def test_concurrent_acquisitions_never_exceed_the_limit(store: Store) -> None:
    await store.create_key(_key("sk-race-key-00000000", max_parallel_requests=3))
    token = hash_key("sk-race-key-00000000")
    results = await asyncio.gather(*(store.acquire_session(token, f"s{i}", "i", "m", "r", 3, NOW)
                                     for i in range(12)))
    assert sum(results) == 3


async def test_request_counts_per_minute(store: Store) -> None:
    token = hash_key("sk-rpm")
    assert [await store.count_request(token, NOW + i) for i in range(3)] == [1, 2, 3]
    assert await store.count_request(token, NOW + 60) == 1  # the next minute


async def test_spend_batches_and_log_filters(store: Store) -> None:
    await store.create_key(_key("sk-spender-000000000"))
    token = hash_key("sk-spender-000000000")
    rows = [_row("r1", "sk-spender-000000000"),
            _row("r2", "sk-spender-000000000", model="other", start_time=NOW + 90000),
            _row("r3", "sk-someone-else-0000")]
    await store.write_batch({token: 0.5}, rows)
    await store.write_batch({token: 0.25}, rows[:1])  # a retried batch does not duplicate rows
    assert (await store.get_key(token)).spend == pytest.approx(0.75)
    assert {r["request_id"] for r in await store.spend_logs()} == {"r1", "r2", "r3"}
    assert {r["request_id"] for r in await store.spend_logs(api_key=token)} == {"r1", "r2"}
    assert [r["request_id"] for r in await store.spend_logs(model="other")] == ["r2"]
    assert [r["request_id"] for r in await store.spend_logs(api_key=token, start=NOW + 1000)] == ["r2"]
    assert [r["request_id"] for r in await store.spend_logs(api_key=token, end=NOW + 1000)] == ["r1"]


async def test_client_secrets(store: Store) -> None:
    await store.create_secret(SecretRecord(hash_key("ek_x"), hash_key("sk-parent"), NOW + 60, {"model": "m"}, NOW))
    secret = await store.get_secret(hash_key("ek_x"))
    assert secret is not None and secret.token_hash == hash_key("sk-parent") and secret.session == {"model": "m"}
    assert await store.get_secret(hash_key("ek_y")) is None


class _FlakyStore:
    """A store whose writes fail while `down` is set."""

    def __init__(self) -> None:
        self.down = True
        self.batches: list[tuple[dict[str, float], list[dict[str, Any]]]] = []

    async def write_batch(self, spend: dict[str, float], logs: list[dict[str, Any]]) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL: ConnectionRefusedError")
        self.batches.append((dict(spend), list(logs)))


async def test_writer_keeps_rows_through_an_outage_and_bounds_them() -> None:
    flaky = _FlakyStore()
    writer = SpendWriter(flaky, interval=0.01, max_rows=3)  # type: ignore[arg-type]
    writer.add_spend("k", 0.5)
    for i in range(5):
        writer.add_log({"request_id": f"r{i}"})
    assert writer.dropped == 2 and writer.backlog == 4  # 3 rows + 1 key's spend
    assert not await writer.flush()
    assert writer.error is not None and writer.backlog == 4 and writer.unflushed_spend("k") == 0.5
    writer.add_spend("k", 0.25)
    flaky.down = False
    assert await writer.flush()
    assert writer.error is None and writer.backlog == 0
    spend, logs = flaky.batches[0]
    assert spend == {"k": 0.75} and [r["request_id"] for r in logs] == ["r2", "r3", "r4"]


async def test_a_flush_waits_for_the_batch_in_flight() -> None:
    # The background task took the queued spend and is still writing it: a caller's flush (the tests', the
    # admin's report, shutdown) must not return before that batch is in the store.
    slow = _SlowStore()
    writer = SpendWriter(slow)  # type: ignore[arg-type]
    writer.add_spend("team:voice", 0.25)
    background = asyncio.create_task(writer.flush())
    await slow.writing.wait()
    caller = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.05)
    assert not caller.done()  # the old flush saw an empty queue and returned at once
    slow.release.set()
    assert await background and await caller
    assert slow.written == {"team:voice": 0.25}


async def test_writer_stop_flushes_what_is_queued(store: Store) -> None:
    await store.create_key(_key("sk-flush-on-stop-000"))
    token = hash_key("sk-flush-on-stop-000")
    writer = SpendWriter(store, interval=60)
    writer.start()
    writer.add_spend(token, 0.125)
    writer.add_log(_row("last", "sk-flush-on-stop-000"))
    await writer.stop()
    assert (await store.get_key(token)).spend == pytest.approx(0.125)
    assert [r["request_id"] for r in await store.spend_logs()] == ["last"]


# --- teams, users, regeneration (migration 2) ------------------------------------------------------------------


async def test_a_version_1_database_is_migrated_with_its_keys_and_rows(database_url: str) -> None:
    """A store written by the previous release (schema 1) opens with its keys, spend and rows intact."""
    from livegate.accounting import store as store_module

    old = Store(open_database(database_url, None))
    original = store_module.MIGRATIONS
    store_module.MIGRATIONS = original[:1]
    try:
        await old.open()
        async with old.db.transaction() as tx:
            await tx.execute("INSERT INTO livegate_keys (token_hash, key_alias, spend, created_at, updated_at) "
                             "VALUES ($1, 'kept', 0.5, $2, $2)", hash_key("sk-from-release-one-0"), NOW)
            await tx.execute("INSERT INTO livegate_spend_logs (request_id, api_key, start_time, end_time, spend) "
                             "VALUES ('old-row', $1, $2, $2, 0.5)", hash_key("sk-from-release-one-0"), NOW)
        assert await old.schema_version() == 1
    finally:
        store_module.MIGRATIONS = original
        await old.close()
    upgraded = Store(open_database(database_url, None))
    await upgraded.open()
    try:
        assert await upgraded.schema_version() == MIGRATIONS[-1][0]
        key = await upgraded.get_key(hash_key("sk-from-release-one-0"), NOW)
        assert key is not None and key.key_alias == "kept" and key.spend == 0.5
        assert key.team_id is None and key.blocked is False and key.regenerated_to is None
        rows = await upgraded.spend_logs()
        assert [(r["request_id"], r["team_id"], r["user_id"]) for r in rows] == [("old-row", None, None)]
    finally:
        await upgraded.close()


async def test_teams_users_members_and_their_budget_periods(store: Store) -> None:
    from livegate.accounting.owners import TeamRecord, UserRecord

    await store.create_user(UserRecord("u1", user_alias="User One", max_budget=2.0, budget_duration="1d",
                                       budget_reset_at=NOW + 86400, created_at=NOW, updated_at=NOW), [], NOW)
    await store.create_team(TeamRecord("t1", team_alias="Team", models=["m"], max_budget=1.0, budget_duration="1h",
                                       budget_reset_at=NOW + 3600, tags=["x"], created_at=NOW, updated_at=NOW),
                            [("u1", "admin")], NOW)
    assert [(m.user_id, m.role) for m in await store.members("t1")] == [("u1", "admin")]
    assert [(m.team_id, m.role) for m in await store.memberships("u1")] == [("t1", "admin")]
    await store.write_batch({"team:t1": 0.75, "user:u1": 0.5}, [])
    team = await store.get_team("t1", NOW + 10)
    assert team is not None and team.spend == pytest.approx(0.75) and team.models == ["m"] and team.tags == ["x"]
    # the team's hour is over, the user's day is not: only the team starts again, on its schedule
    assert (await store.get_team("t1", NOW + 2 * 3600 + 1)).spend == 0  # type: ignore[union-attr]
    assert (await store.get_team("t1", NOW + 2 * 3600 + 1)).budget_reset_at == NOW + 3 * 3600  # type: ignore[union-attr]
    assert (await store.get_user("u1", NOW + 2 * 3600 + 1)).spend == pytest.approx(0.5)  # type: ignore[union-attr]
    assert (await store.get_user("u1", NOW + 86400 + 1)).spend == 0  # type: ignore[union-attr]
    # a period that ended before new spend arrives (the writer's clock is the real one): the spend starts the
    # new period instead of being wiped by the next read
    await store.update_user("u1", {"spend": 0.5, "budget_reset_at": time.time() - 1}, NOW)
    await store.write_batch({"user:u1": 0.25}, [])
    now = time.time()
    user = await store.get_user("u1", now)
    assert user is not None and user.spend == pytest.approx(0.25) and now < user.budget_reset_at <= now + 86400
    updated = await store.update_team("t1", {"blocked": True, "max_budget": None}, NOW)
    assert updated is not None and updated.blocked is True and updated.max_budget is None
    await store.create_key(_key("sk-team-key-00000000", team_id="t1", user_id="u1"))
    await store.create_key(_key("sk-user-key-00000000", user_id="u1"))
    assert await store.delete_teams(["t1", "nope"], NOW) == (["t1"], [hash_key("sk-team-key-00000000")])
    assert await store.members("t1") == []
    assert (await store.get_key(hash_key("sk-team-key-00000000"))).deleted_at == NOW  # type: ignore[union-attr]
    assert await store.delete_users(["u1"], NOW) == (["u1"], [hash_key("sk-user-key-00000000")])
    assert await store.list_keys() == []


async def test_regenerated_key_takes_its_spend_rows_and_late_charges(store: Store) -> None:
    await store.create_key(_key("sk-before-rotation-0", max_budget=5.0, max_parallel_requests=3))
    old, new = hash_key("sk-before-rotation-0"), hash_key("sk-after-rotation-00")
    await store.write_batch({old: 1.0}, [_row("r-before", "sk-before-rotation-0")])
    assert await store.acquire_session(old, "live", "i", "m", "r", 3, NOW)
    record = await store.regenerate_key(old, new, "sk-...00", {"key_alias": "rotated"}, NOW + 1)
    assert record is not None and record.token_hash == new and record.spend == 1.0 and record.max_budget == 5.0
    assert record.key_alias == "rotated"
    tombstone = await store.get_key(old)
    assert tombstone is not None and tombstone.regenerated_to == new and tombstone.deleted_at == NOW + 1
    # a session still running on the old secret: its spend and row land on the key
    await store.write_batch({old: 0.5}, [_row("r-late", "sk-before-rotation-0")])
    assert (await store.get_key(new)).spend == pytest.approx(1.5)  # type: ignore[union-attr]
    assert {r["request_id"] for r in await store.spend_logs(api_key=new)} == {"r-before", "r-late"}
    assert not await store.acquire_session(new, "s2", "i", "m", "r", 1, NOW + 2)  # the live slot moved too
    # twice: every tombstone points at the current secret
    newest = hash_key("sk-third-secret-0000")
    await store.regenerate_key(new, newest, "sk-...00", {}, NOW + 3)
    assert (await store.get_key(old)).regenerated_to == newest  # type: ignore[union-attr]
    await store.write_batch({old: 0.25}, [])
    assert (await store.get_key(newest)).spend == pytest.approx(1.75)  # type: ignore[union-attr]
    assert await store.regenerate_key(old, hash_key("sk-x-000000000000000"), "x", {}, NOW) is None


async def test_team_session_limit_holds_across_its_keys_under_concurrency(store: Store) -> None:
    limits = [("token_hash", "k", None), ("team_id", "t", 2)]
    results = await asyncio.gather(*(store.acquire_session_slot(f"k{i % 3}", f"s{i}", "i", "m", "r", NOW,
                                                                [(c, v if c != "token_hash" else f"k{i % 3}", lim)
                                                                 for c, v, lim in limits], team_id="t")
                                     for i in range(9)))
    assert results.count(None) == 2 and set(results) == {None, "team_id"}
    assert {r["session_id"] for r in await store.live_sessions(NOW)} == {f"s{i}" for i, r in enumerate(results)
                                                                          if r is None}
    chosen = next(f"s{i}" for i, r in enumerate(results) if r is None)
    assert await store.request_stop(chosen) and not await store.request_stop("nope")
    assert await store.stop_requests("i") == [chosen]


class _SlowStore:
    """A store whose writes wait until the test releases them."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        self.written: dict[str, float] = {}

    async def write_batch(self, spend: dict[str, float], logs: list[dict[str, Any]]) -> None:
        self.writing.set()
        await self.release.wait()
        for account, amount in spend.items():
            self.written[account] = self.written.get(account, 0.0) + amount


async def test_a_transcript_is_kept_beside_its_spend_row_and_found_by_either_id(store: Store) -> None:
    """store_prompts_in_spend_logs (migration 3): the transcript goes to livegate_transcripts, the row is found by
    its request id or by the OpenAI session id, a retried batch keeps one of each."""
    kept = json.dumps({"turns": [{"role": "user", "text": "mail [EMAIL]"}], "truncated": False})
    rows = [_row("req-t1", "sk-t", session_id="sess_abc", transcript=kept), _row("req-t2", "sk-t")]
    await store.write_batch({}, rows)
    await store.write_batch({}, rows[:1])
    by_session = await store.spend_log("sess_abc")
    assert by_session is not None and by_session[0]["request_id"] == "req-t1" and by_session[1] == kept
    assert "transcript" not in by_session[0]
    without = await store.spend_log("req-t2")
    assert without is not None and without[1] is None and without[0]["session_id"] is None
    assert await store.spend_log("sess_unknown") is None
    assert sorted(r["request_id"] for r in await store.spend_logs()) == ["req-t1", "req-t2"], "no duplicate rows"
