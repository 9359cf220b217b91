"""Accounting on the passthrough routes: one spend row per Vertex REST call, costed from Google's usage;
budget and model limits on REST; a Live passthrough session ended with 4029 when its key's budget runs out."""

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
from websockets.exceptions import ConnectionClosed

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.fakes import serve_app
from tests.fakes.google import FakeVertexRest

MASTER = "sk-master-passthrough-accounting"
PATH = "/vertex_ai/v1/projects/proj/locations/us-central1/publishers/google/models/{}:generateContent"


@pytest.fixture
async def served(sa_file: Path) -> AsyncIterator[dict[str, Any]]:
    fake = FakeVertexRest()
    async with serve_app(fake) as google_side, GeminiLiveSimulator(chunk_delay=0) as sim:
        config = parse_config({
            "model_list": [
                {"model_name": "gemini-2.5-flash", "litellm_params": {"model": "vertex_ai/gemini-2.5-flash"}},
                {"model_name": "gemini-2.5-pro", "litellm_params": {"model": "vertex_ai/gemini-2.5-pro"}},
                {"model_name": "live", "litellm_params": {"model": "gemini/gemini-3.8-live", "api_key": "AIza-x",
                                                          "api_base": sim.url}}],
            "litellm_settings": {"default_vertex_config": {
                "vertex_project": "proj", "vertex_credentials": str(sa_file), "api_base": google_side.url}},
            "general_settings": {"master_key": MASTER}})
        app = create_app(config, simulator_chunk_delay=0)
        async with serve_app(app) as gateway, httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            yield {"http": http, "app": app, "ws": gateway.ws_url, "fake": fake}


async def _key(http: httpx.AsyncClient, **settings: Any) -> str:
    response = await http.post("/key/generate", json=settings, headers={"Authorization": f"Bearer {MASTER}"})
    return response.json()["key"]


async def _rows(served: dict[str, Any], key: str) -> list[dict[str, Any]]:
    await served["app"].state.gateway.accounting.writer.flush()
    response = await served["http"].get("/spend/logs", params={"api_key": key},
                                        headers={"Authorization": f"Bearer {MASTER}"})
    return response.json()


async def test_rest_calls_are_costed_and_limited(served: dict[str, Any]) -> None:
    http = served["http"]
    key = await _key(http, models=["gemini-2.5-flash"], max_budget=0.00002, tags=["rest"])
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    headers = {"Authorization": f"Bearer {key}", "tags": "vertex-js-sdk,pass-through-endpoint"}
    response = await http.post(PATH.format("gemini-2.5-flash"), json=body, headers=headers)
    assert response.status_code == 200
    await asyncio.sleep(0.05)
    (row,) = await _rows(served, key)
    # FakeVertexRest answers with 3 prompt and 5 candidates tokens, all text (Vertex's spelling)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 5)
    assert row["spend"] == pytest.approx((3 * 0.30 + 5 * 2.50) / 1e6)
    assert row["call_type"] == "pass_through_request" and row["route"] == "vertex_ai" and row["close_code"] == 200
    assert row["request_tags"] == ["rest", "vertex-js-sdk", "pass-through-endpoint"]
    other = await http.post(PATH.format("gemini-2.5-pro"), json=body, headers=headers)
    assert other.status_code == 403 and other.json()["error"]["code"] == "model_not_allowed"
    await http.post(PATH.format("gemini-2.5-flash"), json=body, headers=headers)  # spends past the budget
    await asyncio.sleep(0.05)
    spent = await http.post(PATH.format("gemini-2.5-flash"), json=body, headers=headers)
    assert spent.status_code == 429 and spent.json()["error"]["code"] == "budget_exceeded"
    assert len(served["fake"].requests) == 2


async def test_live_passthrough_session_ends_when_the_budget_runs_out(served: dict[str, Any]) -> None:
    key = await _key(served["http"], max_budget=0.00001)
    async with connect(served["ws"] + "/gemini/live", additional_headers={"x-goog-api-key": key}) as ws:
        await ws.send(json.dumps({"setup": {"model": "live", "generationConfig": {"responseModalities": ["AUDIO"]}}}))
        await ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "Hi " * 50}]}],
                                                    "turnComplete": True}}))
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4029 and "budget" in ws.close_reason
    (row,) = await _rows(served, key)
    assert row["close_code"] == 4029 and row["spend"] > 0.00001 and row["route"] == "gemini/live"
