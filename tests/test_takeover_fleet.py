"""Sessions that outlive the gateway process, with real parts (issue 17 §3): two `livegate` processes behind
HAProxy (the manual's config, docs/operating/failures.md) sharing one PostgreSQL, one Gemini simulator, and the
openai SDK's GA client with its reconnect hook. The instance holding the call is killed (`kill -9`) or drained
(`SIGTERM`) in the middle of a conversation whose answers depend on earlier turns: the next answer comes on
the same client object, from the other instance, with the conversation whole (nothing lost or duplicated)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.simulator import GeminiLiveSimulator
from tests.fakes.haproxy import NO_HAPROXY, free_port, haproxy, haproxy_bin
from tests.fakes.postgres import PostgresServer
from tests.fleet_support import MASTER, Fleet, fleet_config, start_instance
from tests.support import collect

pytestmark = pytest.mark.skipif(haproxy_bin() is None, reason=NO_HAPROXY)


@pytest.fixture
async def fleet(pg_server: PostgresServer, tmp_path: Path) -> AsyncIterator[Fleet]:
    database_url = pg_server.create_database()
    async with GeminiLiveSimulator(chunk_delay=0.005) as sim:
        config = fleet_config(tmp_path, sim, database_url)
        fleet = Fleet("", sim)
        try:
            fleet.instances = list(await asyncio.gather(start_instance(config, tmp_path),
                                                        start_instance(config, tmp_path)))
            with haproxy(free_port(), [i.port for i in fleet.instances]) as url:
                fleet.url = url
                yield fleet
        finally:
            fleet.stop_all()


async def ask(conn: Any, text: str) -> list[Any]:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await collect(conn)


def done_items(events: list[Any]) -> list[dict[str, Any]]:
    return [e.item.model_dump(exclude_none=True) for e in events if e.type == "conversation.item.done"]


async def retrieve(conn: Any, item_id: str) -> dict[str, Any]:
    await conn.conversation.item.retrieve(item_id=item_id)
    events = await collect(conn, "conversation.item.retrieved")
    return dict(events[-1].item.model_dump(exclude_none=True))


async def wait_for(condition: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_rolling_restart_then_a_crash_lose_nothing_of_the_conversation(fleet: Fleet, tmp_path: Path) -> None:
    session_id: list[str] = []

    def on_reconnecting(event: Any) -> dict[str, Any]:  # the manual's hook (docs/connecting.md)
        return {"extra_query": {**dict(event.extra_query or {}), "session_id": session_id[0]}}

    client = AsyncOpenAI(api_key=MASTER, websocket_base_url=fleet.url.replace("http", "ws") + "/v1")
    async with client.realtime.connect(model="gpt-realtime", on_reconnecting=on_reconnecting) as conn:
        created = await conn.recv()
        session_id.append(created.session.id)
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.recv()
        items = done_items(await ask(conn, "My name is Ada") + await ask(conn, "I live in Paris"))
        assert [i["role"] for i in items] == ["user", "assistant", "user", "assistant"]
        said = ["My name is Ada", "I live in Paris"]

        for fault in ("SIGTERM", "kill -9"):
            holder = await fleet.holder()
            await asyncio.sleep(0.3)  # Gemini's handle of the last turn, and its write, have come
            gemini_sessions = len(fleet.sim.sessions)
            dropped = conn._connection
            if fault == "SIGTERM":
                holder.proc.send_signal(signal.SIGTERM)
            else:
                holder.proc.kill()
            reading = asyncio.create_task(collect(conn))  # the SDK notices the close while reading, and reconnects
            await wait_for(lambda dropped=dropped: conn._connection is not dropped and not conn._is_reconnecting)
            after = await ask_in_flight(conn, reading, "What did I say before?")

            assert [e.type for e in after].count("session.created") == 0, fault
            answer = next(e.text for e in after if e.type == "response.output_text.done")
            assert answer == "[livegate simulator] Before this you said: " + " | ".join(said), fault
            for item in items:  # the item store the other instance serves is the one the client saw
                assert await retrieve(conn, item["id"]) == item, fault
            new = done_items(after)
            assert [i["role"] for i in new] == ["user", "assistant"], fault
            assert not {i["id"] for i in new} & {i["id"] for i in items}, "nothing repeated"
            added = next(e for e in after if e.type == "conversation.item.added")
            assert added.previous_item_id == items[-1]["id"], "the new turn follows the last one: nothing lost"
            survivor = next(i for i in fleet.instances if i is not holder)
            assert await fleet.holder() is survivor, fault
            assert fleet.sim.sessions[gemini_sessions].resumed_from is not None, "the same Gemini session"
            items += new
            said.append("What did I say before?")

            if fault == "SIGTERM":  # the deploy goes on: the drained process exits, its new version starts
                assert holder.proc.wait(15) in (0, -signal.SIGTERM), holder.log.read_text()[-2000:]
                assert "draining 1 sessions" in holder.log.read_text()
                restarted = await start_instance(holder.config, tmp_path, holder.port)
                fleet.instances[fleet.instances.index(holder)] = restarted
                await asyncio.sleep(2.5)  # HAProxy's checks find it up (rise 2, inter 1 s)


async def ask_in_flight(conn: Any, reading: asyncio.Task[list[Any]], text: str) -> list[Any]:
    """Ask while `reading` collects (it began before the reconnection, so it also holds what came first)."""
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await reading
