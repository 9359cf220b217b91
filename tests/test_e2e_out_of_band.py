"""Out-of-band responses end to end: the openai SDK asks livegate for a response with `conversation: "none"`,
livegate answers it by a streamGenerateContent call of the model's family to the simulator's REST endpoint
(beside the live session), and the client sees the usual text response events: no conversation.item.*, the
conversation untouched, Gemini's live session never told, the usage billed as the response's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.conformance import check_client_event
from tests.support import collect, serve

KEY = "AIza-oob-secret"


@pytest.fixture
async def gateway() -> AsyncIterator[dict[str, Any]]:
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(GeminiLiveSimulator(chunk_delay=0, api_key=KEY))
        params = {"model": "gemini/gemini-3.8-live", "api_key": KEY, "api_base": sim.url}
        config = parse_config({"model_list": [
            {"model_name": "gpt-realtime", "litellm_params": params},
            # a side model the backend does not serve by generateContent (a Live model): the call fails
            {"model_name": "broken-side", "litellm_params": params, "model_info": {"side_model": "gemini-3.8-live"}},
        ]})
        url = await stack.enter_async_context(serve(create_app(config, simulator_chunk_delay=0)))
        yield {"ws": url.replace("http", "ws") + "/v1", "sim": sim}


async def _response(conn: Any) -> list[Any]:
    events = await collect(conn, "rate_limits.updated")
    for event in events:
        check_client_event(event.to_dict())
    return events


async def test_an_out_of_band_answer_leaves_the_conversation_alone(
        gateway: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sim = gateway["sim"]
    client = AsyncOpenAI(api_key="sk-oob", websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "My order is late"}]})
        added = await collect(conn, "conversation.item.added")
        user_item = added[-1].item.id
        await conn.response.create()
        await _response(conn)

        await conn.response.create(response={
            "conversation": "none", "output_modalities": ["text"], "metadata": {"purpose": "classify"},
            "instructions": "Classify the mood.",
            "input": [{"type": "item_reference", "id": user_item},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "angry?"}]}]})
        events = await _response(conn)
        assert [e.type for e in events] == [
            "response.created", "response.output_item.added", "response.content_part.added"] + [
            "response.output_text.delta"] * (len(events) - 8) + [
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
            "response.done", "rate_limits.updated"]
        done = events[-2].response
        assert done.conversation_id is None and done.metadata == {"purpose": "classify"}
        text = done.output[0].content[0].text
        assert "You said: angry?" in text and "(instructions: Classify the mood.)" in text
        assert done.usage.input_tokens > 0 and done.usage.output_tokens > 0

        # The side call: the family's generateContent model, the route's key, the referenced item as context.
        (call,) = sim.rest_calls
        assert "/models/gemini-3.8-flash:streamGenerateContent" in call.path
        assert call.headers["x-goog-api-key"] == KEY
        assert [c["parts"][0]["text"] for c in call.body["contents"]] == ["My order is late", "angry?"]

        # The conversation is untouched: Gemini's live session never heard "angry?", and recalls only the order.
        recall = {"type": "input_text", "text": "What did I say before?"}
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [recall]})
        await conn.response.create()
        answer = await _response(conn)
        recalled = next(e.text for e in answer if e.type == "response.output_text.done")
        assert "My order is late" in recalled and "angry?" not in recalled
        assert "angry?" not in json.dumps(sim.sessions[0].received)

    # billed as its own response: the session's usage counts it beside the live turns
    for _ in range(200):  # the session ends once the gateway has seen the client go
        ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("session_end")]
        if ends:
            break
        await asyncio.sleep(0.025)
    end = json.loads(ends[0][len("session_end "):])
    assert end["tokens"]["output_tokens"] >= done.usage.output_tokens + answer[-2].response.usage.output_tokens
    assert any("out-of-band response" in r.getMessage() for r in caplog.records)
    assert KEY not in caplog.text


async def test_a_failed_side_call_fails_its_response_only(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key="sk-oob", websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="broken-side") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hello"}]})
        await collect(conn, "conversation.item.done")
        await conn.response.create(response={"conversation": "none", "output_modalities": ["text"]})
        events = await _response(conn)
        assert [e.type for e in events] == ["response.created", "response.done", "rate_limits.updated"]
        failed = events[1].response
        assert failed.status == "failed" and failed.status_details.error.code == "not_found"
        await conn.response.create()
        answer = await _response(conn)
        assert answer[-2].response.status == "completed"
