"""Frames handed to a session as they are read (`deliver_to`), on both of its sockets: uvicorn's side
(realtime_route.DeliveringProtocol) and Gemini's (upstream/connection.DeliveringConnection). Each message
reaches the session once, whole, in the order it was sent; the ones the receiver declines come from the
socket's queue, and while one waits there no later message is handed over before it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from livegate.server.realtime_route import SessionSocket
from livegate.upstream.base import UpstreamTarget
from livegate.upstream.connection import UpstreamConnection
from tests.support import serve

COUNT = 60


class Arrivals:
    """What a receiver took and what the queue gave, checked for order as it happens."""

    def __init__(self, declines: int) -> None:
        self.declines = declines  # every n-th message offered is declined
        self.offered = 0
        self.taken: list[int] = []
        self.queued: list[int] = []
        self.declined: list[int] = []
        self.overtaken: list[int] = []  # messages handed over while an earlier one still waited in the queue

    def receiver(self, message: str | bytes) -> bool:
        n = json.loads(message)["n"]
        self.offered += 1
        if any(m < n and m not in self.queued for m in self.declined):
            self.overtaken.append(n)
        if self.offered % self.declines == 0:
            self.declined.append(n)
            return False
        self.taken.append(n)
        return True

    def check(self) -> None:
        assert sorted(self.taken + self.queued) == list(range(COUNT))  # each message once
        assert self.taken == sorted(self.taken) and self.queued == sorted(self.queued)
        assert self.overtaken == [] and self.declined and self.taken


# -- Gemini's side -----------------------------------------------------------------------------------


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    async def burst(ws: Any) -> None:
        for n in range(COUNT):  # text and binary, several to a write at times
            text = json.dumps({"n": n, "pad": "x" * (n * 37 % 2000)})
            await ws.send(text if n % 2 else text.encode())
            if n % 7 == 0:
                await asyncio.sleep(0.005)
        await ws.wait_closed()

    async with ws_serve(burst, "127.0.0.1", 0, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_geminis_messages_reach_the_session_once_and_in_order(upstream_url: str) -> None:
    arrivals = Arrivals(declines=4)
    kinds: dict[int, type] = {}

    def receiver(message: str | bytes) -> bool:
        kinds[json.loads(message)["n"]] = type(message)
        return arrivals.receiver(message)

    async def read() -> None:
        while True:
            message = await conn.recv()
            n = json.loads(message)["n"]
            kinds[n] = type(message)
            arrivals.queued.append(n)

    conn = await UpstreamConnection.open(UpstreamTarget(upstream_url, {}, "m", "aistudio"))
    conn.deliver_to(receiver)
    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(10):
            while len(arrivals.taken) + len(arrivals.queued) < COUNT:
                await asyncio.sleep(0.01)
    finally:
        reader.cancel()
        await conn.close()
    arrivals.check()
    assert all(kinds[n] is (str if n % 2 else bytes) for n in range(COUNT))  # text as str, binary as bytes


async def test_without_a_receiver_every_message_comes_from_recv(upstream_url: str) -> None:
    conn = await UpstreamConnection.open(UpstreamTarget(upstream_url, {}, "m", "aistudio"))
    conn.deliver_to(lambda message: True)
    conn.deliver_to(None)
    try:
        got = [json.loads(await conn.recv())["n"] for _ in range(COUNT)]
    finally:
        await conn.close()
    assert got == list(range(COUNT))


# -- the client's side (uvicorn) -----------------------------------------------------------------------


def _app(arrivals: Arrivals, done: asyncio.Future[None]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        socket = SessionSocket(scope, receive, send)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        assert socket.deliver_to(arrivals.receiver), "served with livegate's protocol"
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                break
            arrivals.queued.append(json.loads(message.get("text") or message["bytes"])["n"])
            if len(arrivals.taken) + len(arrivals.queued) == COUNT:
                await socket.send_text(json.dumps({"taken": len(arrivals.taken)}))
        done.set_result(None)

    return app


async def test_a_clients_messages_reach_the_session_once_and_in_order() -> None:
    arrivals = Arrivals(declines=5)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    async with serve(_app(arrivals, done)) as url, websockets.connect(url.replace("http", "ws")) as ws:
        for n in range(COUNT):
            text = json.dumps({"n": n})
            await ws.send(text if n % 3 else text.encode())
            if n % 9 == 0:
                await asyncio.sleep(0.005)
        async with asyncio.timeout(10):
            assert json.loads(await ws.recv())["taken"] == len(arrivals.taken)
    await asyncio.wait_for(done, 5)
    arrivals.check()


async def test_a_client_text_that_is_not_utf8_still_closes_with_1007() -> None:
    arrivals = Arrivals(declines=1_000_000)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    async with serve(_app(arrivals, done)) as url, websockets.connect(url.replace("http", "ws")) as ws:
        await ws.send(json.dumps({"n": 0}))
        await ws.send(b'{"n": 1, "bad": "\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    assert arrivals.taken == [0]
