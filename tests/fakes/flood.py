"""A flooding Gemini Live endpoint and the OpenAI client reading from it, in a process of their own.

Fairness tests need a peer that stays ahead of livegate: in livegate's own event loop it could only send
when livegate yields, which is what is being tested. Run as `python -m tests.fakes.flood SECONDS [KEY]`:

1. it serves a Gemini Live endpoint that answers `setup`, then streams text deltas as fast as the socket
   takes them, and prints its port;
2. it reads a livegate WebSocket URL (for a model served by that endpoint) from stdin, connects as an
   OpenAI client, asks for a response and reads everything for SECONDS;
3. it prints the number of events it received and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

DELTA = json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "fl"}]}}})


async def _gemini(ws: Any) -> None:
    try:
        await ws.recv()
        await ws.send(json.dumps({"setupComplete": {}}))
        await ws.recv()  # the first content: from here on, never stop talking
        while True:
            await ws.send(DELTA)
    except ConnectionClosed:
        pass


async def _main(seconds: float, key: str | None) -> None:
    async with serve(_gemini, "127.0.0.1", 0, compression=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        url = (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()
        received = 0
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with connect(url, max_size=None, compression=None, additional_headers=headers) as ws:
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
    asyncio.run(_main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0, sys.argv[2] if len(sys.argv) > 2 else None))
