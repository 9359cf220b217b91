"""End to end through the official openai SDK: a key restricted to one model with a small budget, turns
until the budget is spent, then 429; /key/info and /spend/logs show the exact spend computed from the
simulator's usage and the price table; the other model is refused with 403; a client secret works in the
browser's subprotocol form and dies at its expiry."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import AsyncOpenAI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from livegate.config import parse_config
from livegate.paths import MAPPINGS_DIR
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import refusal, serve
from tests.test_e2e import _pcm16

MASTER = "sk-master-e2e-accounting"
PRICES = next(row for row in yaml.safe_load((MAPPINGS_DIR / "prices.yaml").read_text())["models"]
              if "gemini-3.8-live" in row["match"])


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        params = {"model": "gemini/gemini-3.8-live", "api_key": "AIza-e2e", "api_base": sim.url}
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": params},
                           {"model_name": "gpt-realtime-mini", "litellm_params": params}],
            "general_settings": {"master_key": MASTER},
            "livegate_settings": {"store_path": str(tmp_path / "livegate.db")},
        })
        app = create_app(config, simulator_chunk_delay=0)
        async with serve(app) as url, httpx.AsyncClient(base_url=url,
                                                         headers={"Authorization": f"Bearer {MASTER}"}) as http:
            yield {"url": url, "ws": url.replace("http", "ws"), "http": http, "app": app}


def _cost(usage: Any) -> float:
    """The cost of one response.done usage with the price table's 3.8 Live row (USD per 1M tokens)."""
    return (usage.input_token_details.text_tokens * PRICES["input_text"]
            + usage.input_token_details.audio_tokens * PRICES["input_audio"]
            + usage.output_token_details.text_tokens * PRICES["output_text"]
            + usage.output_token_details.audio_tokens * PRICES["output_audio"]) / 1e6


async def _handshake_status(gateway: dict[str, Any], key: str, model: str) -> int:
    client = AsyncOpenAI(api_key=key, websocket_base_url=gateway["ws"] + "/v1")
    async with client.realtime.connect(model=model) as conn:  # the SDK shows the reason as an error event
        event = await conn.recv()
        assert event.type == "error" and event.error.message, event
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        code = conn._connection.close_code
    assert code is not None
    return code - 4000


async def test_budgeted_key_through_the_openai_sdk(gateway: dict[str, Any]) -> None:
    """Turns run until the budget has no room for another response's worst case (16 output tokens at the model's
    price, reserved before each): that response is refused, nothing is overspent, the session stays open."""
    http = gateway["http"]
    key = (await http.post("/key/generate", json={"models": ["gpt-realtime"], "max_budget": 0.0009,
                                                  "key_alias": "e2e"})).json()["key"]
    client = AsyncOpenAI(api_key=key, websocket_base_url=gateway["ws"] + "/v1")
    costs: list[float] = []
    error = None
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "max_output_tokens": 16,
                                           "audio": {"input": {"turn_detection": None}}})
        await conn.input_audio_buffer.append(audio=base64.b64encode(_pcm16(0.5, 8000)).decode())  # audio in
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        async for event in conn:
            if event.type == "response.done":
                costs.append(_cost(event.response.usage))
                await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": f"Turn {len(costs)}: tell me more"}]})
                await conn.response.create()
            elif event.type == "error":
                error = event.error
                break
    assert error is not None and error.code == "budget_exceeded" and "up to 16 output tokens" in error.message
    spent = sum(costs)
    assert len(costs) >= 2 and spent <= 0.0009, "reserved before each response: the budget is never overspent"
    assert await _handshake_status(gateway, key, "gpt-realtime-mini") == 403
    await gateway["app"].state.gateway.accounting.writer.flush()
    info = (await http.get("/key/info", params={"key": key})).json()["info"]
    assert info["spend"] == pytest.approx(spent, rel=1e-9, abs=1e-15)
    rows = (await http.get("/spend/logs", params={"api_key": key})).json()
    assert len(rows) == 1 and rows[0]["spend"] == pytest.approx(spent, rel=1e-9, abs=1e-15)
    assert rows[0]["close_code"] == 1000 and rows[0]["input_audio_tokens"] > 0 and rows[0]["model"] == "gpt-realtime"


async def test_client_secret_subprotocol_and_expiry(gateway: dict[str, Any]) -> None:
    http = gateway["http"]
    key = (await http.post("/key/generate", json={"models": ["gpt-realtime"]})).json()["key"]
    minted = await http.post("/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"},
                             json={"expires_after": {"anchor": "created_at", "seconds": 10}})
    secret = minted.json()
    assert minted.status_code == 200 and secret["expires_at"] <= time.time() + 10
    url = gateway["ws"] + "/v1/realtime?model=gpt-realtime"
    protocols = ["realtime", f"openai-insecure-api-key.{secret['value']}"]
    async with connect(url, subprotocols=protocols) as ws:  # a browser's way: no headers
        assert json.loads(await ws.recv())["type"] == "session.created"
    sdk = AsyncOpenAI(api_key=secret["value"], websocket_base_url=gateway["ws"] + "/v1")  # and as a Bearer
    async with sdk.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
    await asyncio.sleep(max(secret["expires_at"] - time.time(), 0) + 0.5)
    status, _ = await refusal(connect(url, subprotocols=protocols))
    assert status == 401
