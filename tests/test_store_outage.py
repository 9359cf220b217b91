"""The spend store tells the truth (issue 18, item 7): readiness fails when the SQLite file or the PostgreSQL
server is gone; spend rows buffered during an outage survive a shutdown (a spill file, written once at the
next start); an outage is one log line each way, never a traceback per retry; and, while the store cannot be
written, handshakes get 503 unless allow_requests_on_db_unavailable admits known keys from their last state.
PostgreSQL runs on a server of this module's own, so halting it disturbs no other test."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import connect

from livegate.accounting.database import StoreUnavailable, open_database
from livegate.accounting.gate import Accounting, Grant, Refusal
from livegate.accounting.keys import hash_key, new_key
from livegate.accounting.prices import PriceTable
from livegate.accounting.store import KeyRecord, Store
from tests.accounting_support import NO_POSTGRES
from tests.fakes.postgres import PostgresServer, postgres_bin, postgres_server
from tests.test_accounting_api import MASTER, _auth, _connect, _served, _text_turn
from tests.test_accounting_shutdown import _port, _wait_ready


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PostgresServer]:
    if postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    with postgres_server() as server:
        yield server


# --- SQLite: the file deleted under a running gateway ---------------------------------------------------------


async def test_a_deleted_sqlite_file_fails_readiness_and_its_rows_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    async with _served(tmp_path) as served:
        assert (await served.http.get("/health/readiness")).status_code == 200
        async with _connect(served, MASTER) as ws:
            await _text_turn(ws)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)  # a cleanup job, an operator's mistake
            ready = await served.http.get("/health/readiness")
            assert ready.status_code == 503 and "deleted" in ready.json()["store_error"], ready.text
        await asyncio.sleep(0.3)  # the session's row is queued, not written into the deleted file
        assert served.app.state.gateway.accounting.writer.backlog >= 1
    spills = list((tmp_path / "spill").glob("spill-*.jsonl"))
    assert len(spills) == 1 and oct(spills[0].stat().st_mode & 0o777) == "0o600"
    assert MASTER not in spills[0].read_text()
    async with _served(tmp_path) as restarted:  # a new file at the same path: the spill is written into it
        rows = await restarted.spend_logs(model="gpt-realtime")
        assert len(rows) == 1 and rows[0]["total_tokens"] > 0
        assert (await restarted.http.get("/health/readiness")).status_code == 200
    assert not list((tmp_path / "spill").glob("spill-*"))


async def test_a_spill_is_written_once_and_only_into_its_own_store(tmp_path: Path) -> None:
    from livegate.accounting.spill import replay_spills, write_spill

    stores = []
    for name in ("a.db", "b.db"):
        store = Store(open_database(None, str(tmp_path / name)))
        await store.open()
        stores.append(store)
    a, b = stores
    row = {"request_id": "r-spilled", "api_key": "", "start_time": 1.0, "end_time": 2.0}
    path = write_spill(str(tmp_path / "spill"), a.db.identity, {}, [row])
    assert await replay_spills(b, str(tmp_path / "spill")) == 0 and path.exists()  # not b's
    copy = path.read_bytes()
    assert await replay_spills(a, str(tmp_path / "spill")) == 1 and not path.exists()
    path.write_bytes(copy)  # as if the process died after the commit, before deleting the file
    assert await replay_spills(a, str(tmp_path / "spill")) == 0 and not path.exists()
    assert [r["request_id"] for r in await a.spend_logs()] == ["r-spilled"]
    for store in stores:
        await store.close()


# --- PostgreSQL: SIGTERM during an outage ---------------------------------------------------------------------


async def test_sigterm_during_a_postgres_outage_loses_no_spend(own_pg: PostgresServer, tmp_path: Path) -> None:
    url = own_pg.create_database()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "model_list": [{"model_name": "gpt-realtime", "livegate_params": {"model": "simulator/gemini-3.8-live"}}],
        "general_settings": {"master_key": MASTER, "database_url": url},
        "livegate_settings": {"spend_spill_dir": str(tmp_path / "spill")}}))

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = _port()
        process = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--port", str(port), "--config",
                                    str(config)], cwd=tmp_path, stderr=subprocess.PIPE)
        return process, f"http://127.0.0.1:{port}"

    process, base = start()
    try:
        await _wait_ready(base, process)
        async with connect(base.replace("http", "ws") + "/v1/realtime?model=gpt-realtime",
                           additional_headers=_auth(MASTER)) as ws:
            await _text_turn(ws)
            own_pg.halt()  # the database goes away with the session's spend not yet written
        await asyncio.sleep(0.5)
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) in (0, -signal.SIGTERM)
        # The spend writer tries once and spills; the session-state writer (takeover/writer.py, issue 17)
        # retries its queue for up to 10 s first. Bounded either way: not held for the outage's length.
        assert time.monotonic() - stopping < 16, "shutdown is not held for the outage"
    finally:
        if process.poll() is None:
            process.kill()
        own_pg.start()
    log = process.stderr.read().decode() if process.stderr else ""
    assert "saved to" in log and "Traceback" not in log, log[-3000:]
    assert len(list((tmp_path / "spill").glob("spill-*.jsonl"))) == 1
    process, base = start()
    try:
        await _wait_ready(base, process)  # the spill is written at start
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 20)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT model, total_tokens, spend FROM livegate_spend_logs")
    finally:
        await conn.close()
    assert len(rows) == 1 and rows[0]["model"] == "gpt-realtime" and rows[0]["total_tokens"] > 0
    assert not list((tmp_path / "spill").glob("spill-*"))


async def test_an_outage_is_one_log_line_each_way(own_pg: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(open_database(own_pg.create_database(), None))
    acct = Accounting(store, PriceTable.load(), master_key=MASTER, poll_interval=0.1, writer_interval=0.05)
    await acct.start()
    key = new_key()
    await store.create_key(KeyRecord(token_hash=hash_key(key), created_at=time.time(), updated_at=time.time()))
    grant = await acct.admit(key, route="/v1/realtime")
    assert isinstance(grant, Grant)
    caplog.set_level(logging.INFO)
    try:
        own_pg.halt()
        acct.writer.add_log({"request_id": "r-outage", "api_key": "", "start_time": 1.0, "end_time": 2.0})
        for _ in range(6):  # handshakes, readiness checks, writer retries and polls, for about 3 s
            assert isinstance(await acct.principal(key), Refusal)
            assert (await acct.readiness())["status"] == "unhealthy"
            await asyncio.sleep(0.5)
        own_pg.start()
        for _ in range(100):
            if (await acct.readiness())["status"] == "healthy" and not acct.writer.backlog:
                break
            await asyncio.sleep(0.1)
    finally:
        await grant.finish(1000)
        await acct.stop()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    messages = [r.getMessage() for r in problems]
    assert not [r for r in problems if r.exc_info], "no traceback"
    assert len(messages) == 2, messages
    assert messages[0].startswith("spend store unavailable") and messages[1].startswith("spend store available again")


# --- a store that cannot be written (a full disk): the admission decision --------------------------------------


class _Full:
    """Writes fail as SQLite's do on a full disk (StoreUnavailable "database or disk is full"); reads work."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if name in ("acquire_session", "acquire_session_slot", "count_request", "write_batch", "heartbeat",
                    "release_sessions", "ping", "purge_secrets", "stop_requests", "get_keys", "get_key", "get_secret",
                    "get_team", "get_user", "get_teams", "get_users"):
            async def failing(*args: Any, **kwargs: Any) -> Any:
                if name.startswith("get") and not self.reads_fail:
                    return await attribute(*args, **kwargs)
                raise StoreUnavailable("SQLite: database or disk is full")
            return failing
        return attribute

    reads_fail = False


@pytest.mark.parametrize("allowed", [False, True])
async def test_admission_while_the_store_cannot_be_written(tmp_path: Path, allowed: bool) -> None:
    store = Store(open_database(None, str(tmp_path / "spend.db")))
    acct = Accounting(store, PriceTable.load(), master_key=MASTER, admit_when_unavailable=allowed)
    await acct.start()
    known, unknown = new_key(), new_key()
    for key in (known, unknown):
        await store.create_key(KeyRecord(token_hash=hash_key(key), created_at=time.time(), updated_at=time.time(),
                                         max_parallel_requests=2))
    first = await acct.admit(known, route="/v1/realtime")  # read and admitted while the store works
    assert isinstance(first, Grant)
    full = _Full(store)
    acct.store = full  # type: ignore[assignment]
    try:
        second = await acct.admit(known, route="/v1/realtime")
        if not allowed:
            assert isinstance(second, Refusal) and second.status == 503
            return
        assert isinstance(second, Grant) and not second.holds_slot  # admitted, its limit counted here
        third = await acct.admit(known, route="/v1/realtime")
        assert isinstance(third, Refusal) and third.code == "realtime_session_limit"
        full.reads_fail = True  # the server gone altogether: known keys from their last state, others 503
        assert isinstance(await acct.admit(unknown, route="/v1/realtime"), Refusal)
        await second.finish(1000)
        again = await acct.admit(known, route="/v1/realtime")
        assert isinstance(again, Grant)
        await again.finish(1000)
    finally:
        await first.finish(1000)
        acct.store = store
        await acct.stop()
    assert os.path.exists(tmp_path / "spend.db")


async def test_admission_while_the_store_is_gone_counts_the_team_here(tmp_path: Path) -> None:
    """allow_requests_on_db_unavailable with a key in a team: its team, as last read, still limits it (the
    team's max_parallel_requests counted on this instance), and a key of the team never read here gets 503."""
    from livegate.accounting.owners import TeamRecord

    store = Store(open_database(None, str(tmp_path / "spend.db")))
    acct = Accounting(store, PriceTable.load(), master_key=MASTER, admit_when_unavailable=True)
    await acct.start()
    now = time.time()
    await store.create_team(TeamRecord(team_id="t1", team_alias="eng", max_parallel_requests=2, created_at=now,
                                       updated_at=now), [], now)
    known, unseen = new_key(), new_key()
    for key in (known, unseen):
        await store.create_key(KeyRecord(token_hash=hash_key(key), team_id="t1", created_at=now, updated_at=now))
    first = await acct.admit(known, route="/v1/realtime")
    assert isinstance(first, Grant)
    gone = _Full(store)
    gone.reads_fail = True
    acct.store = gone  # type: ignore[assignment]
    try:
        second = await acct.admit(known, route="/v1/realtime")
        assert isinstance(second, Grant) and second.principal.team is not None  # the team as last read
        third = await acct.admit(known, route="/v1/realtime")
        assert isinstance(third, Refusal) and third.code == "realtime_session_limit" and "eng" in third.message
        refused = await acct.admit(unseen, route="/v1/realtime")
        assert isinstance(refused, Refusal) and refused.status == 503
        await second.finish(1000)
    finally:
        await first.finish(1000)
        acct.store = store
        await acct.stop()
