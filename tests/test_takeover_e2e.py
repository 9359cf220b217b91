"""Sessions that outlive the process, end to end in one test process: two livegate instances sharing one store
(an SQLite file, as on one host), one Gemini simulator, raw WebSocket clients. What a client sees of a drain
(readiness, refusals, 1012), who may take a session over (its key, the master key; one of two racers), a
client whose connection dropped coming back through the other instance (the owner hands the session over,
with the events the client missed), and an instance taken for dead that wakes up (fenced off)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.takeover.store import DETACHED, RELEASED
from tests.support import refusal, serve
from tests.test_session_core import MAPPINGS

MASTER = "sk-master-takeover"


@contextlib.asynccontextmanager
async def instances(tmp_path: Path, chunk_delay: float = 0.0, **settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Two instances (A, B) over one store file; yields their apps, with `.url` set."""
    async with GeminiLiveSimulator(chunk_delay=chunk_delay) as sim:
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
                "model": "gemini/gemini-3.8-live", "api_key": "AIza-takeover", "api_base": sim.url}}],
            "general_settings": {"master_key": MASTER, "database_url": f"sqlite:///{tmp_path / 'store.db'}"},
            "livegate_settings": {"reattach_grace_s": 30, "drain_timeout_s": 5, **settings}})
        a, b = create_app(config, MAPPINGS), create_app(config, MAPPINGS)
        async with serve(a) as url_a, serve(b) as url_b:
            a.url, b.url = url_a, url_b
            a.sim = b.sim = sim
            yield a, b


def open_ws(app: Any, key: str = MASTER, session_id: str | None = None) -> Any:
    query = f"&session_id={session_id}" if session_id else ""
    return connect(app.url.replace("http", "ws") + f"/v1/realtime?model=gpt-realtime{query}",
                   additional_headers={"Authorization": f"Bearer {key}"})


async def send(ws: Any, **event: Any) -> None:
    await ws.send(json.dumps(event))


async def until(ws: Any, kind: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), 15))
        events.append(event)
        if event["type"] == kind:
            return events


async def say(ws: Any, text: str) -> list[dict[str, Any]]:
    await send(ws, type="conversation.item.create", item={"type": "message", "role": "user",
                                                         "content": [{"type": "input_text", "text": text}]})
    await send(ws, type="response.create")
    return await until(ws, "response.done")


async def start(ws: Any) -> str:
    created = json.loads(await ws.recv())
    await send(ws, type="session.update", session={"type": "realtime", "output_modalities": ["text"]})
    await until(ws, "session.updated")
    return str(created["session"]["id"])


def answer(events: list[dict[str, Any]]) -> str:
    return next(e["text"] for e in events if e["type"] == "response.output_text.done")


async def closed(ws: Any) -> int:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 15)
    assert ws.close_code is not None
    return int(ws.close_code)


async def row(app: Any, session_id: str) -> Any:
    await app.state.gateway.takeover.writer.flush()
    return await app.state.gateway.takeover.store.load(session_id)


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


async def generate_key(app: Any) -> str:
    async with httpx.AsyncClient(base_url=app.url) as http:
        response = await http.post("/key/generate", json={}, headers={"Authorization": f"Bearer {MASTER}"})
    return str(response.json()["key"])


# --- draining ----------------------------------------------------------------------------------------


async def test_a_drain_refuses_new_sessions_and_hands_the_session_to_the_other_instance(tmp_path: Path) -> None:
    async with instances(tmp_path) as (a, b), open_ws(a) as ws:
        session_id = await start(ws)
        await say(ws, "My name is Ada")
        draining = asyncio.create_task(a.state.gateway.takeover.drain())
        assert await closed(ws) == 1012
        async with httpx.AsyncClient(base_url=a.url) as http:
            ready = await http.get("/health/readiness")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        with pytest.raises(InvalidStatus) as refused:
            async with open_ws(a):
                pass
        response = refused.value.response
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert json.loads(response.body)["error"]["code"] == "server_draining"
        await draining
        stored = await row(b, session_id)
        assert stored.status == RELEASED and stored.state["at_rest"]
        async with open_ws(b, session_id=session_id) as again:
            final = await say(again, "What did I say before?")
        assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"
        assert "session.created" not in [e["type"] for e in final]
        await wait_for(lambda: _gone(b, session_id))  # the session ended on B: nothing is left to take over


async def test_a_drain_waits_for_the_answer_under_way(tmp_path: Path) -> None:
    async with instances(tmp_path, chunk_delay=0.05) as (a, _), open_ws(a) as ws:
        await start(ws)
        await send(ws, type="conversation.item.create", item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me something long about the sea and the sky and the wind"}]})
        await send(ws, type="response.create")
        await until(ws, "response.output_text.delta")
        draining = asyncio.create_task(a.state.gateway.takeover.drain())
        events = await until(ws, "response.done")
        assert events[-1]["response"]["status"] == "completed", "the answer finished before the close"
        assert await closed(ws) == 1012
        await draining


# --- who may take a session over -----------------------------------------------------------------------


async def test_only_its_key_or_the_master_key_takes_a_session_over(tmp_path: Path) -> None:
    async with instances(tmp_path) as (a, b):
        owner, other = await generate_key(a), await generate_key(a)
        async with open_ws(a, owner) as ws:
            session_id = await start(ws)
            await say(ws, "My name is Ada")
            await a.state.gateway.takeover.drain()
        status, error = await refusal(open_ws(b, other, session_id))
        assert (status, error["code"]) == (404, "session_not_found"), "another key's session is not found"
        status, error = await refusal(open_ws(b, owner, "sess_" + "0" * 20))
        assert (status, error["code"]) == (404, "session_not_found")
        async with open_ws(b, MASTER, session_id) as ws:
            final = await say(ws, "What did I say before?")
        assert answer(final).endswith("My name is Ada")


async def test_of_two_clients_racing_for_a_session_one_wins(tmp_path: Path) -> None:
    async with instances(tmp_path) as (a, b):
        async with open_ws(a) as ws:
            session_id = await start(ws)
            await a.state.gateway.takeover.drain()
        async with open_ws(b, session_id=session_id) as first, open_ws(b, session_id=session_id) as second:
            outcomes = []
            for ws in (first, second):
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    outcomes.append((event["error"]["code"], await closed(ws)))
                except TimeoutError:
                    outcomes.append(("held", None))  # the winner: the session waits for its input
            assert sorted(outcomes, key=str) == sorted([("held", None), ("session_in_use", 4409)], key=str)
            winner = first if outcomes[0][0] == "held" else second
            assert answer(await say(winner, "Hello")).startswith("[livegate simulator]")
        await wait_for(lambda: _gone(b, session_id))
        status, error = await refusal(open_ws(b, session_id=session_id))
        assert (status, error["code"]) == (404, "session_not_found"), "resumed once: then it ended"


# --- a client that comes back through the other instance ------------------------------------------------


async def test_a_dropped_client_coming_back_elsewhere_gets_what_it_missed(tmp_path: Path) -> None:
    async with instances(tmp_path, chunk_delay=0.05) as (a, b):
        ws = await open_ws(a)
        session_id = await start(ws)
        await send(ws, type="conversation.item.create", item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me something long about the sea and the sky and the wind"}]})
        await send(ws, type="response.create")
        seen = await until(ws, "response.output_text.delta")
        ws.transport.abort()  # the client's network drops in the middle of the answer
        await wait_for(lambda: _status(a, session_id, DETACHED))
        async with open_ws(b, session_id=session_id) as again:
            rest = await until(again, "response.done")
            assert rest[-1]["response"]["status"] == "completed"
            text = "".join(e["delta"] for e in seen + rest if e["type"] == "response.output_text.delta")
            assert text == answer(rest), "every delta it missed, once, in order"
            final = await say(again, "What did I say before?")
        assert answer(final).endswith("Tell me something long about the sea and the sky and the wind")


async def _gone(app: Any, session_id: str) -> bool:
    return await row(app, session_id) is None


async def _status(app: Any, session_id: str, status: str) -> bool:
    stored = await row(app, session_id)
    return stored is not None and stored.status == status


# --- an instance taken for dead ------------------------------------------------------------------------


async def test_an_instance_taken_for_dead_loses_the_session_it_still_held(tmp_path: Path) -> None:
    async with instances(tmp_path) as (a, b):
        ws = await open_ws(a)
        session_id = await start(ws)
        await say(ws, "My name is Ada")
        takeover = a.state.gateway.takeover
        for task in takeover._tasks:  # A stops heartbeating (a long stall), its session still open
            task.cancel()
        async with open_ws(b, session_id=session_id) as again:  # B waits until A is silent long enough
            final = await say(again, "What did I say before?")
            assert answer(final).endswith("My name is Ada")
            await send(ws, type="conversation.item.create", item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "I am still here"}]})  # A wakes up: its write is fenced off
            events = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            assert ws.close_code == 4409 and events[-1]["error"]["code"] == "session_in_use"
            assert (await row(b, session_id)).owner == b.state.gateway.accounting.instance_id
