"""A WebSocket proxy that records every frame between a client library and livegate.

The framework tests (tests/test_framework_*.py) put it between the real library and livegate, to assert what
the library sent and what reached it. It also captures a library's exact event sequence for study:

    python -m tests.recording_proxy ws://127.0.0.1:4000 8765 capture.jsonl

then point the library at ws://127.0.0.1:8765 (with its usual path, /v1/realtime) instead of livegate; each
line of capture.jsonl is {"dir": "client" | "server", "event": <the JSON frame>} (audio cut to 16 characters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import websockets
from websockets.asyncio.server import ServerConnection, serve

_LONG = ("audio", "delta")  # base64 audio: kept short in a capture file


@dataclass
class Recording:
    """Frames in the order the proxy saw them: ("client" | "server", decoded JSON)."""

    upstream: str = ""  # where new connections go (a test may move it: another instance behind a balancer)
    frames: list[tuple[str, Any]] = field(default_factory=list)
    closes: list[tuple[int | None, str]] = field(default_factory=list)
    connections: int = 0
    out: TextIO | None = None  # a capture file: each frame is written as it passes

    def add(self, side: str, event: Any) -> None:
        self.frames.append((side, event))
        if self.out is not None:
            self.out.write(json.dumps({"dir": side, "event": _short(event)}) + "\n")
            self.out.flush()

    def sent(self) -> list[dict[str, Any]]:
        """What the client library sent."""
        return [event for side, event in self.frames if side == "client"]

    def received(self) -> list[dict[str, Any]]:
        """What reached the client library."""
        return [event for side, event in self.frames if side == "server"]

    def types(self, side: str) -> list[str]:
        return [event.get("type", "?") for s, event in self.frames if s == side and isinstance(event, dict)]

    def errors(self) -> list[dict[str, Any]]:
        return [event for event in self.received() if isinstance(event, dict) and event.get("type") == "error"]


def _decode(frame: str | bytes) -> Any:
    try:
        return json.loads(frame)
    except ValueError:
        return {"type": "<not json>", "bytes": len(frame)}


@contextlib.asynccontextmanager
async def recording_proxy(upstream: str, port: int = 0) -> AsyncIterator[tuple[str, Recording]]:
    """Serve a proxy on 127.0.0.1 that forwards each connection (path, query and headers as sent) to
    `upstream` (ws://host:port); yield its base URL (ws://127.0.0.1:PORT) and the recording."""
    recording = Recording(upstream=upstream)

    async def handle(client: ServerConnection) -> None:
        request = client.request
        assert request is not None
        headers = {k: v for k, v in request.headers.raw_items()
                   if k.lower() in ("authorization", "openai-beta", "x-goog-api-key", "api-key")}
        protocols = request.headers.get("sec-websocket-protocol")
        subprotocols = [p.strip() for p in protocols.split(",")] if protocols else None
        try:
            recording.connections += 1
            server = await websockets.connect(recording.upstream + request.path, additional_headers=headers,
                                              subprotocols=subprotocols,  # type: ignore[arg-type]
                                              max_size=None)
        except websockets.InvalidStatus as refused:
            await client.close(1008, f"upstream refused: HTTP {refused.response.status_code}")
            return

        async def pump(source: Any, sink: Any, side: str) -> None:
            try:
                async for frame in source:
                    recording.add(side, _decode(frame))
                    await sink.send(frame)
            except websockets.ConnectionClosed:
                pass
            finally:
                if side == "server":
                    recording.closes.append((source.close_code, source.close_reason or ""))
                code = source.close_code
                # 1005/1006 (no status, abnormal) describe a close but cannot be sent in one
                await sink.close(code if code and code not in (1005, 1006) else 1000, source.close_reason or "")

        async with server:
            await asyncio.gather(pump(client, server, "client"), pump(server, client, "server"))

    async with serve(handle, "127.0.0.1", port, max_size=None) as proxy:
        port = next(iter(proxy.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}", recording


def _short(event: Any) -> Any:
    if isinstance(event, dict):
        return {k: (v[:16] + "..." if k in _LONG and isinstance(v, str) and len(v) > 16 else _short(v))
                for k, v in event.items()}
    return event


async def _main(upstream: str, port: int, path: str) -> None:
    with open(path, "w") as out:
        async with recording_proxy(upstream, port) as (url, recording):
            recording.out = out
            print(f"recording {url} -> {upstream} into {path} (stop it with Ctrl-C)", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
