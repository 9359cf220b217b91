"""Two livegate instances sharing one PostgreSQL server enforce one key's limits together: concurrent
sessions (max_parallel_requests) and budget, including stopping a session on one instance when the key's
budget is spent through the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.accounting_support import NO_POSTGRES
from tests.fakes.postgres import PostgresServer, postgres_bin, postgres_server
from tests.support import refusal, serve

MASTER = "sk-master-fleet-test"


@contextlib.asynccontextmanager
async def _instance(sim: GeminiLiveSimulator, database_url: str) -> AsyncIterator[str]:
    config = parse_config({
        "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-fleet", "api_base": sim.url}}],
        "general_settings": {"master_key": MASTER, "database_url": database_url},
        "livegate_settings": {"key_check_seconds": 0.2},
    })
    async with serve(create_app(config, simulator_chunk_delay=0)) as url:
        yield url


@pytest.fixture
async def fleet(pg_server: PostgresServer) -> AsyncIterator[tuple[str, str]]:
    url = pg_server.create_database()
    async with GeminiLiveSimulator(chunk_delay=0) as sim, _instance(sim, url) as a, _instance(sim, url) as b:
        yield a, b


async def _generate(base: str, **settings: Any) -> str:
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post("/key/generate", json=settings, headers={"Authorization": f"Bearer {MASTER}"})
    assert response.status_code == 200
    return response.json()["key"]


def _open(base: str, key: str) -> Any:
    return connect(base.replace("http", "ws") + "/v1/realtime?model=gpt-realtime",
                   additional_headers={"Authorization": f"Bearer {key}"})


async def _status(base: str, key: str) -> tuple[int, str]:
    status, error = await refusal(_open(base, key))
    return status, error["code"]


async def _turn(ws: Any) -> None:
    # A few output tokens: the response's reservation fits the small budgets below (its long input, which no
    # reservation foresees before the first usage report, is what takes the spend past them).
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "max_output_tokens": 2,
                                                                     "output_modalities": ["text"]}}))
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello " * 30}]}}))
    await ws.send(json.dumps({"type": "response.create"}))


async def test_one_concurrent_session_limit_across_two_instances(fleet: tuple[str, str]) -> None:
    a, b = fleet
    key = await _generate(a, max_parallel_requests=1)
    async with _open(a, key):
        assert await _status(b, key) == (429, "realtime_session_limit")
        assert await _status(a, key) == (429, "realtime_session_limit")
    await asyncio.sleep(0.3)
    async with _open(b, key):
        assert await _status(a, key) == (429, "realtime_session_limit")


async def test_one_budget_across_two_instances(fleet: tuple[str, str]) -> None:
    a, b = fleet
    key = await _generate(b, max_budget=0.00005)
    async with _open(b, key) as waiting, _open(a, key) as spender:
        await _turn(spender)  # spending on A ...
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(spender.recv(), 10)
        assert spender.close_code == 4029
        errors = []
        with contextlib.suppress(ConnectionClosed):  # ... ends the idle session on B too
            while True:
                event = json.loads(await asyncio.wait_for(waiting.recv(), 10))
                errors += [event["error"]["code"]] if event["type"] == "error" else []
        assert waiting.close_code == 4029 and errors == ["insufficient_quota"]
    assert await _status(b, key) == (429, "budget_exceeded")
    assert await _status(a, key) == (429, "budget_exceeded")


async def test_postgres_outage_does_not_end_sessions_and_spend_is_written_after() -> None:
    """A real outage: the PostgreSQL server stops mid-session and comes back."""
    if postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    with postgres_server() as pg:
        database = pg.create_database()
        async with GeminiLiveSimulator(chunk_delay=0) as sim, _instance(sim, database) as base, \
                httpx.AsyncClient(base_url=base) as http:
            key = await _generate(base, max_budget=10.0)
            async with _open(base, key) as ws:
                await _turn(ws)
                await _until_done(ws)
                await asyncio.to_thread(pg.halt)
                await _turn(ws)  # the session goes on without its database
                await _until_done(ws)
            await asyncio.sleep(1.0)
            ready = await http.get("/health/readiness")
            assert ready.status_code == 503 and ready.json()["db"] == "disconnected"
            assert ready.json()["store_backlog"] >= 1
            await asyncio.to_thread(pg.start)
            for _ in range(100):  # the writer retries with backoff (at most 5 s)
                if (await http.get("/health/readiness")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("livegate did not recover when PostgreSQL came back")
            rows = (await http.get("/spend/logs", params={"api_key": key},
                                   headers={"Authorization": f"Bearer {MASTER}"})).json()
            info = (await http.get("/key/info", params={"key": key},
                                   headers={"Authorization": f"Bearer {MASTER}"})).json()["info"]
    assert len(rows) == 1 and rows[0]["spend"] > 0 and rows[0]["metadata"]["turns"] == 2
    assert info["spend"] == pytest.approx(rows[0]["spend"])


async def _until_done(ws: Any) -> None:
    while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "response.done":
        pass
