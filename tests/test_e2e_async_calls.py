"""Asynchronous function calls end to end: the openai SDK declares a non_blocking function tool (livegate's
extension), the simulator (as gemini-3.8-live) calls it and talks on, and the client's function_call_output
reaches Gemini with the scheduling it asked for (WHEN_IDLE unless told), the answer following it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.conformance import check_client_event
from tests.support import collect, serve


@pytest.fixture
async def gateway() -> AsyncIterator[dict[str, Any]]:
    async with contextlib.AsyncExitStack() as stack:
        sim = await stack.enter_async_context(GeminiLiveSimulator(chunk_delay=0))
        config = parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-async", "api_base": sim.url}}]})
        url = await stack.enter_async_context(serve(create_app(config, simulator_chunk_delay=0)))
        yield {"ws": url.replace("http", "ws") + "/v1", "sim": sim}


async def _until_done(conn: Any) -> list[Any]:
    events = await collect(conn, "rate_limits.updated")
    for event in events:
        check_client_event(event.to_dict())
    return events


def _text(events: list[Any]) -> str:
    return "".join(e.text for e in events if e.type == "response.output_text.done")


async def test_the_model_talks_on_while_a_non_blocking_call_runs(gateway: dict[str, Any]) -> None:
    client = AsyncOpenAI(api_key="sk-async", websocket_base_url=gateway["ws"])
    async with client.realtime.connect(model="gpt-realtime") as conn:
        tool = {"type": "function", "name": "book_table", "behavior": "non_blocking",
                "parameters": {"type": "object", "properties": {}}}
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [tool]})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "please book_table"}]})
        await conn.response.create()
        call = (await _until_done(conn))[-2].response.output[0]
        assert (call.type, call.name) == ("function_call", "book_table")
        talking = await _until_done(conn)  # no response.create: Gemini talks on by itself
        assert "running book_table in the background" in _text(talking)

        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                  "output": '{"booked": true}'})
        await conn.response.create()
        answer = await _until_done(conn)
        assert "booked" in _text(answer)

    received = gateway["sim"].sessions[0].received
    setup = next(m["setup"] for m in received if "setup" in m)
    assert setup["tools"][0]["functionDeclarations"][0].get("behavior") in (None, "NON_BLOCKING")  # the default
    (response,) = [r for m in received if "toolResponse" in m for r in m["toolResponse"]["functionResponses"]]
    assert (response["id"], response["scheduling"]) == (call.call_id, "WHEN_IDLE")
