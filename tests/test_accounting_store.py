"""The spend store, the same tests on SQLite and on a real PostgreSQL server: migrations, keys, budgets,
session slots, rate windows, spend rows, client secrets, and the background writer's outage handling."""

from __future__ import annotations

import asyncio
import json
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
    assert await store.schema_version() == MIGRATIONS[-1][0]
    again = Store(open_database(database_url, None))
    await again.open()  # a second instance (or a restart) finds the schema in place
    try:
        assert await again.schema_version() == MIGRATIONS[-1][0]
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
