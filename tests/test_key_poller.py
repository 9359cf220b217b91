"""The key poller and admission never race (issue 18, item 1): a session admitted while a poll reads the
store is judged by the state it was admitted with, never closed 4010 because the poll's read predates it;
a deleted key still ends its sessions within one poll. On SQLite and on a real PostgreSQL server, and through
a running livegate's WebSocket route."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from livegate.accounting.gate import Accounting, Grant
from livegate.accounting.keys import hash_key, new_key
from livegate.accounting.prices import PriceTable
from livegate.accounting.store import KeyRecord, Store
from livegate.close_codes import KEY_REVOKED
from tests.test_accounting_api import _connect, _events_until_close, _served


async def _keys(store: Store, count: int) -> list[str]:
    keys = [new_key() for _ in range(count)]
    now = time.time()
    for key in keys:
        await store.create_key(KeyRecord(token_hash=hash_key(key), created_at=now, updated_at=now))
    return keys


class _TimedPolls:
    """Wraps Accounting.poll: how long each took (revocation is due within the interval plus one poll)."""

    def __init__(self, accounting: Accounting) -> None:
        self.longest = 0.0
        self.count = 0
        inner = accounting.poll

        async def timed() -> None:
            started = time.monotonic()
            try:
                await inner()
            finally:
                self.longest = max(self.longest, time.monotonic() - started)
                self.count += 1

        accounting.poll = timed  # type: ignore[method-assign]


@pytest.fixture
async def accounting(store: Store) -> AsyncIterator[Accounting]:
    acct = Accounting(store, PriceTable.load(), master_key="sk-master-poller-test", poll_interval=0.02)
    acct.writer.start()
    try:
        yield acct
    finally:
        await acct.writer.stop()
        if acct._poller is not None:
            acct._poller.cancel()


async def test_a_session_admitted_during_a_poll_is_not_closed(accounting: Accounting, store: Store) -> None:
    """Deterministic: the poll's read is held open while a new key's session is admitted."""
    first, second = await _keys(store, 2)
    early = await accounting.admit(first, route="/v1/realtime")
    assert isinstance(early, Grant)
    reading, release = asyncio.Event(), asyncio.Event()
    get_keys = store.get_keys

    async def slow_get_keys(hashes: list[str], now: float | None = None) -> dict[str, KeyRecord]:
        found = await get_keys(hashes, now)
        if not reading.is_set():  # the poll's read happens now ...
            reading.set()
            await release.wait()  # ... and its answer arrives after the next admission (which reads freely)
        return found

    store.get_keys = slow_get_keys  # type: ignore[method-assign]
    poll = asyncio.create_task(accounting.poll())
    await reading.wait()
    late = await accounting.admit(second, route="/v1/realtime")
    assert isinstance(late, Grant)
    release.set()
    await poll
    assert late.stop is None and early.stop is None
    store.get_keys = get_keys  # type: ignore[method-assign]
    await accounting.poll()  # the next poll reads the late key too, and finds it valid
    assert late.stop is None


async def test_hundreds_of_admissions_under_a_fast_poller_and_a_revocation(accounting: Accounting,
                                                                          store: Store) -> None:
    """The issue's proof: 600 sessions of 40 valid keys admitted while the poller runs every 20 ms, zero
    closed; then a deleted key's sessions (and only they) end with 4010 within the interval plus one poll."""
    keys = await _keys(store, 40)
    timed = _TimedPolls(accounting)
    accounting._poller = asyncio.create_task(accounting._poll_loop())
    rng = random.Random(18)
    grants: list[Grant] = []

    async def admit(key: str) -> None:
        await asyncio.sleep(rng.random() * 0.02)  # spread over the poll cycle
        grant = await accounting.admit(key, route="/v1/realtime")
        assert isinstance(grant, Grant), grant
        grants.append(grant)

    for _ in range(10):  # waves of 60 concurrent admissions
        await asyncio.gather(*(admit(rng.choice(keys)) for _ in range(60)))
    polls_during = timed.count
    await asyncio.sleep(0.2)  # more polls over every admitted session
    false_closes = [g for g in grants if g.stop is not None]
    assert len(grants) == 600 and not false_closes, f"{len(false_closes)} of 600 closed: {false_closes[0].stop}"
    assert polls_during >= 5, polls_during  # the poller really ran during the admissions

    revoked = keys[0]
    mine = [g for g in grants if g.principal.token_hash == hash_key(revoked)]
    assert mine
    await store.delete_keys([hash_key(revoked)], time.time())
    deleted_at = time.monotonic()
    while not all(g.stop is not None for g in mine) and time.monotonic() - deleted_at < 5:
        await asyncio.sleep(0.002)
    took = time.monotonic() - deleted_at
    assert all(g.stop is not None and g.stop.close_code == KEY_REVOKED for g in mine)
    # due within one interval plus the longest poll seen (and a little scheduling slack on a loaded machine)
    assert took <= accounting.poll_interval + timed.longest + 0.1, (took, timed.longest)
    assert all(g.stop is None for g in grants if g not in mine)
    for grant in grants:
        await grant.finish(1000)


async def test_through_a_running_livegate(tmp_path: Path) -> None:
    """The same through the WebSocket route a user sees: 200 sessions of 20 valid keys opened in waves while
    the poller runs every 50 ms, none closed; then a key deleted in the store (as another instance's key API
    does) ends its sessions, and only they, with an invalid_api_key error and close 4010."""
    async with _served(tmp_path, key_check_seconds=0.05) as served:
        accounting = served.app.state.gateway.accounting
        keys = [await served.key() for _ in range(20)]
        sessions: list[tuple[str, ClientConnection]] = []
        try:
            async def open_one(key: str) -> None:
                ws = await _connect(served, key)
                sessions.append((key, ws))
                assert json.loads(await ws.recv())["type"] == "session.created"

            for wave in range(10):
                await asyncio.gather(*(open_one(keys[(wave + i) % 20]) for i in range(20)))
            await asyncio.sleep(0.5)  # ten more polls over every session
            closed = [(ws.close_code, ws.close_reason) for _, ws in sessions if ws.state is not State.OPEN]
            assert len(sessions) == 200 and not closed, f"{len(closed)} of 200 closed: {closed[:3]}"

            revoked = keys[0]
            await accounting.store.delete_keys([hash_key(revoked)], time.time())
            deleted_at = time.monotonic()
            mine = [ws for key, ws in sessions if key == revoked]
            ends = await asyncio.gather(*(_events_until_close(ws, timeout=5) for ws in mine))
            took = time.monotonic() - deleted_at
            assert all(ws.close_code == KEY_REVOKED for ws in mine), [ws.close_code for ws in mine]
            assert all(any(e["type"] == "error" and e["error"]["code"] == "invalid_api_key" for e in events)
                       for events in ends)
            assert took < 2.0, took  # 50 ms polls; the rest is scheduling on a loaded machine
            assert all(ws.state is State.OPEN for key, ws in sessions if key != revoked)
        finally:
            await asyncio.gather(*(ws.close() for _, ws in sessions), return_exceptions=True)
