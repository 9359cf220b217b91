"""End to end through the official openai SDK to the simulator: an image turn (with its image tokens in
response.done and in the key's spend), Google Search declared in setup, a safety stop, and the idle
timeout (input_audio_buffer.timeout_triggered)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.paths import MAPPINGS_DIR
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import collect, serve

MASTER = "sk-master-e2e-features"
PRICES = next(row for row in yaml.safe_load((MAPPINGS_DIR / "prices.yaml").read_text())["models"]
              if "gemini-3.8-live" in row["match"])
JPEG = "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0 a camera frame").decode()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        params = {"model": "gemini/gemini-3.8-live", "api_key": "AIza-e2e", "api_base": sim.url}
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": params,
                            "gemini_features": {"start_of_speech_sensitivity": "low"}}],
            "general_settings": {"master_key": MASTER},
            "livegate_settings": {"store_path": str(tmp_path / "livegate.db")},
        })
        app = create_app(config, simulator_chunk_delay=0)
        async with serve(app) as url, httpx.AsyncClient(base_url=url,
                                                         headers={"Authorization": f"Bearer {MASTER}"}) as http:
            yield {"ws": url.replace("http", "ws") + "/v1", "http": http, "app": app, "sim": sim}


async def test_an_image_turn_reaches_gemini_and_its_tokens_are_billed(gateway: dict[str, Any]) -> None:
    http = gateway["http"]
    key = (await http.post("/key/generate", json={"key_alias": "images"})).json()["key"]
    client = AsyncOpenAI(api_key=key, websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is in the picture?"},
            {"type": "input_image", "image_url": JPEG}]})
        await conn.response.create()
        events = await collect(conn, "response.done")
    text = next(e.text for e in events if e.type == "response.output_text.done")
    assert text == "[livegate simulator] I see 1 image. You said: What is in the picture?"
    usage = events[-1].response.usage
    assert usage.input_token_details.image_tokens == 258
    setup, content = gateway["sim"].sessions[-1].received[:2]
    auto = setup["setup"]["realtimeInputConfig"]["automaticActivityDetection"]
    assert auto["startOfSpeechSensitivity"] == "START_SENSITIVITY_LOW"  # the config's gemini_features
    assert content["clientContent"]["turns"][0]["parts"][1]["inlineData"]["mimeType"] == "image/jpeg"
    rows: list[dict[str, Any]] = []
    for _ in range(100):  # the session's row is written once the server has seen the client go
        await gateway["app"].state.gateway.accounting.writer.flush()
        rows = (await http.get("/spend/logs", params={"api_key": key})).json()
        if rows:
            break
        await asyncio.sleep(0.05)
    row = rows[0]
    assert row["input_image_tokens"] == 258
    image_price = PRICES.get("input_image", PRICES["input_audio"])  # images fall back to the audio price
    details = usage.input_token_details
    expected = (details.text_tokens * PRICES["input_text"] + details.image_tokens * image_price
                + usage.output_token_details.audio_tokens * PRICES["output_audio"]
                + usage.output_token_details.text_tokens * PRICES["output_text"]) / 1e6
    assert row["spend"] == pytest.approx(expected, rel=1e-9)


async def test_google_search_declared_in_setup(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key=MASTER, websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [
            {"type": "google_search"},  # a livegate extension: the SDK passes the dict through
            {"type": "function", "name": "lookup", "parameters": {"type": "object"}}]})
        updated = await collect(conn, "session.updated")
        assert [tool.name for tool in updated[-1].session.tools] == ["lookup"]
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Who won yesterday?"}]})
        await conn.response.create()
        events = await collect(conn, "response.done")
    assert events[-1].response.status == "completed"
    tools = gateway["sim"].sessions[-1].setup["tools"]
    assert tools[0] == {"googleSearch": {}} and tools[1]["functionDeclarations"][0]["name"] == "lookup"


async def test_a_safety_stop_ends_the_response_incomplete(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key=MASTER, websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Something the filter stops [sim:safety]"}]})
        await conn.response.create()
        done = (await collect(conn, "response.done"))[-1].response
    assert done.status == "incomplete" and done.status_details.reason == "content_filter"


async def test_idle_timeout_prompts_the_user(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key=MASTER, websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "audio": {"input": {
            "turn_detection": {"type": "server_vad", "idle_timeout_ms": 300}}}})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Hi"}]})
        await conn.response.create()
        await collect(conn, "rate_limits.updated")  # the answer, and the rate limits that follow response.done
        events = await collect(conn, "response.done")  # no more input: the timer fires and Gemini speaks up
    assert events[0].type == "input_audio_buffer.timeout_triggered"
    assert events[-1].response.status == "completed"
    assert "The user has been silent" in next(e.text for e in events if e.type == "response.output_text.done")


async def test_tool_choice_none_for_one_response(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key=MASTER, websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [
            {"type": "function", "name": "lookup", "parameters": {"type": "object"}}]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "please lookup the weather"}]})
        await conn.response.create(response={"tool_choice": "none"})
        first = (await collect(conn, "response.done"))[-1].response
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "now lookup again"}]})
        await conn.response.create()
        second = (await collect(conn, "response.done"))[-1].response
    assert [item.type for item in first.output] == ["message"]  # the simulator would have called lookup
    assert [item.type for item in second.output] == ["function_call"]  # the tools are back


async def test_camera_frames_while_the_user_talks(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key=MASTER, websocket_base_url=gateway["ws"])
    speech = base64.b64encode(b"\x00\x10" * 12000).decode()  # 0.5 s of 24 kHz PCM
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "audio": {"input": {"turn_detection": None}}})
        await conn.input_audio_buffer.append(audio=speech)
        for _ in range(2):
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_image", "image_url": JPEG}]})
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        done = (await collect(conn, "response.done"))[-1].response
    frames = [m for m in gateway["sim"].sessions[-1].received if "video" in m.get("realtimeInput", {})]
    assert len(frames) == 2 and frames[0]["realtimeInput"]["video"]["mimeType"] == "image/jpeg"
    assert done.usage.input_token_details.image_tokens == 2 * 258  # Gemini's VIDEO tokens
