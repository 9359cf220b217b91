"""A flooding Gemini Live endpoint, and an OpenAI client reading from it, each in a process of its own.

Fairness tests need peers that stay ahead of livegate: in livegate's own event loop (or in one process
together) they could only keep up as far as livegate yields, which is what is being tested.

    python -m tests.fakes.flood upstream                 serve a Gemini Live endpoint that answers `setup`,
                                                         then streams tiny text deltas as fast as the socket
                                                         takes them; prints its port, runs until stdin closes
    python -m tests.fakes.flood client URL SECONDS KEY   connect to livegate as an OpenAI client, ask for a
                                                         response, read for SECONDS, print the event count
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidState

DELTA = json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "fl"}]}}})


async def _gemini(ws: Any) -> None:
    try:
        await ws.recv()
        await ws.send(json.dumps({"setupComplete": {}}))
        await ws.recv()  # the first content: from here on, never stop talking
        while True:  # frames in batches straight to the socket: faster than any Python consumer
            if ws.transport.get_write_buffer_size() > 1024 * 1024:
                await asyncio.sleep(0.001)
                continue
            for _ in range(500):
                ws.protocol.send_text(DELTA.encode())
            ws.transport.write(b"".join(ws.protocol.data_to_send()))
            await asyncio.sleep(0)
    except (ConnectionClosed, InvalidState):
        pass


async def _upstream() -> None:
    async with serve(_gemini, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _client(url: str, seconds: float, key: str) -> None:
    received = 0
    async with connect(url, max_size=None, compression=None, max_queue=None,
                       additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            received += 1
    print(received, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(_client(sys.argv[2], float(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(_upstream())
