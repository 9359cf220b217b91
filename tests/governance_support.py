"""A running livegate for the governance tests (teams, users, key lifecycle, reports, the admin page): its
HTTP client with the master key, realtime connections, and one text turn. The store is whatever
`database_url` names, so the same tests run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import refusal, serve

MASTER = "sk-master-governance-test"
GEMINI_KEY = "AIza-governance-upstream-secret"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Gov:
    http: httpx.AsyncClient  # sends the master key
    url: str
    app: Any
    sim: GeminiLiveSimulator

    @property
    def ws(self) -> str:
        return self.url.replace("http", "ws", 1)

    @property
    def accounting(self) -> Any:
        return self.app.state.gateway.accounting

    async def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, json=body, **kwargs)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    async def error(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        response = await self.http.request(method, path, json=body, **kwargs)
        assert response.status_code >= 400, f"{method} {path} answered {response.status_code}: {response.text}"
        return response.status_code, response.json()["error"]

    async def key(self, **settings: Any) -> str:
        return str((await self.ok("POST", "/key/generate", settings))["key"])

    async def flush(self) -> None:
        await self.accounting.writer.flush()

    def connect(self, key: str | None, model: str = "gpt-realtime", headers: dict[str, str] | None = None,
                **kwargs: Any) -> Any:
        return connect(f"{self.ws}/v1/realtime?model={model}",
                       additional_headers={**(auth(key) if key else {}), **(headers or {})}, **kwargs)

    async def refused(self, key: str | None, model: str = "gpt-realtime") -> tuple[int, dict[str, Any]]:
        return await refusal(self.connect(key, model))


def config(sim_url: str, database_url: str, master: str | None = MASTER, general: dict[str, Any] | None = None,
           **settings: Any) -> Any:
    params = {"api_key": GEMINI_KEY, "api_base": sim_url}
    return parse_config({
        "model_list": [
            {"model_name": "gpt-realtime", "litellm_params": {"model": "gemini/gemini-3.8-live", **params}},
            {"model_name": "gpt-realtime-mini", "litellm_params": {"model": "gemini/gemini-3.8-live", **params}},
            {"model_name": "offline", "livegate_params": {"model": "simulator/any-name"}},
            {"model_name": "sim-*", "livegate_params": {"model": "simulator/livegate-simulator"}},
        ],
        "general_settings": {**({"master_key": master} if master else {}), "database_url": database_url,
                             **(general or {})},
        "livegate_settings": {"key_check_seconds": 0.2, **settings},
    })


@contextlib.asynccontextmanager
async def governed(database_url: str, general: dict[str, Any] | None = None, **settings: Any) -> AsyncIterator[Gov]:
    async with GeminiLiveSimulator(chunk_delay=0, api_key=GEMINI_KEY) as sim:
        app = create_app(config(sim.url, database_url, general=general, **settings), simulator_chunk_delay=0)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=auth(MASTER)) as http:
            yield Gov(http, url, app, sim)


async def text_turn(ws: ClientConnection, text: str = "Hello there") -> list[dict[str, Any]]:
    """One text turn; the events up to response.done."""
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                     "output_modalities": ["text"]}}))
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    events = []
    while True:
        async with asyncio.timeout(10):
            event = json.loads(await ws.recv())
        events.append(event)
        if event["type"] == "response.done":
            return events
        assert event["type"] != "error", event


async def until_closed(ws: ClientConnection, timeout: float = 10) -> list[dict[str, Any]]:
    """Events until the server closes the connection."""
    events = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            async with asyncio.timeout(timeout):
                events.append(json.loads(await ws.recv()))
    return events
