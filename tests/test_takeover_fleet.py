"""Sessions that outlive the gateway process, with real parts (issue 17 §3): two `livegate` processes behind
HAProxy (the manual's config, docs/operating/failures.md) sharing one PostgreSQL, one Gemini simulator, and the
openai SDK's GA client with its reconnect hook. The instance holding the call is killed (`kill -9`) or drained
(`SIGTERM`) in the middle of a conversation whose answers depend on earlier turns: the next answer comes on
the same client object, from the other instance, with the conversation whole (nothing lost or duplicated)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import AsyncOpenAI

from livegate.simulator import GeminiLiveSimulator
from tests.fakes.haproxy import NO_HAPROXY, free_port, haproxy, haproxy_bin
from tests.fakes.postgres import PostgresServer
from tests.support import collect

MASTER = "sk-master-takeover-fleet"
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(haproxy_bin() is None, reason=NO_HAPROXY)


@dataclass
class Instance:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    url: str  # HAProxy's
    sim: GeminiLiveSimulator
    instances: list[Instance] = field(default_factory=list)

    async def holder(self) -> Instance:
        """The instance whose readiness counts the session."""
        async with httpx.AsyncClient() as http:
            for instance in self.instances:
                if instance.proc.poll() is not None:
                    continue
                state = (await http.get(instance.url + "/health/readiness")).json()
                if state.get("active_sessions"):
                    return instance
        raise AssertionError("no instance holds the session")


def _config(tmp_path: Path, sim: GeminiLiveSimulator, database_url: str) -> Path:
    path = tmp_path / "livegate.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-fleet", "api_base": sim.url}}],
        "general_settings": {"master_key": MASTER, "database_url": database_url},
        "livegate_settings": {"reattach_grace_s": 30, "drain_timeout_s": 10},
    }))
    return path


async def _start(config: Path, tmp_path: Path, port: int | None = None) -> Instance:
    port = port or free_port()
    log = tmp_path / f"livegate-{port}-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "engine")}
    proc = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
                             "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    instance = Instance(port, proc, log, config)
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"livegate exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(instance.url + "/health/readiness")).status_code == 200:
                    return instance
            await asyncio.sleep(0.1)
    raise AssertionError(f"livegate did not start: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def _stopped_at_the_end(fleet: Fleet) -> Iterator[None]:
    try:
        yield
    finally:
        for instance in fleet.instances:
            if instance.proc.poll() is None:
                instance.proc.kill()
            instance.proc.wait()


@pytest.fixture
async def fleet(pg_server: PostgresServer, tmp_path: Path) -> AsyncIterator[Fleet]:
    database_url = pg_server.create_database()
    async with GeminiLiveSimulator(chunk_delay=0.005) as sim:
        config = _config(tmp_path, sim, database_url)
        fleet = Fleet("", sim)
        with _stopped_at_the_end(fleet):
            fleet.instances = list(await asyncio.gather(_start(config, tmp_path), _start(config, tmp_path)))
            with haproxy(free_port(), [i.port for i in fleet.instances]) as url:
                fleet.url = url
                yield fleet


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
                fleet.instances[fleet.instances.index(holder)] = await _start(holder.config, tmp_path, holder.port)
                await asyncio.sleep(2.5)  # HAProxy's checks find it up (rise 2, inter 1 s)


async def ask_in_flight(conn: Any, reading: asyncio.Task[list[Any]], text: str) -> list[Any]:
    """Ask while `reading` collects (it began before the reconnection, so it also holds what came first)."""
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await reading
