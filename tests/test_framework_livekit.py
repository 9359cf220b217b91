"""LiveKit agents' OpenAI `RealtimeModel` (livekit-plugins-openai), driven as `AgentSession` drives it
(update_chat_ctx, generate_reply, the function stream, interrupt), pointed at livegate on the simulator with
only its URL and key changed (issue 10 §3). Installed by the `frameworks` extra."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.frameworks_support import KEY, LONG_PROMPT, TOOL_PROMPT, Gateway, gateway, no_errors

pytest.importorskip("livekit.plugins.openai.realtime", reason="livekit-plugins-openai is in the `frameworks` extra")

import aiohttp
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel, RealtimeSession

calls: list[str] = []


@llm.function_tool
async def get_weather(city: str) -> str:
    """Weather for a city."""
    calls.append(city)
    return '{"temperature_c": 21}'


@asynccontextmanager
async def realtime(gw: Gateway) -> AsyncIterator[tuple[RealtimeSession, list[Any]]]:
    """A session of LiveKit's RealtimeModel with the tool and instructions set; yields it and the errors it
    surfaced to the application (its `error` event)."""
    async with aiohttp.ClientSession() as http:
        model = RealtimeModel(base_url=gw.ws + "/v1", api_key=KEY, model="gpt-realtime", modalities=["text"],
                              http_session=http)
        session = model.session()
        errors: list[Any] = []
        session.on("error", errors.append)
        try:
            await session.update_instructions("Answer briefly.")
            await session.update_tools([get_weather])
            yield session, errors
        finally:
            await session.aclose()


async def say(session: RealtimeSession, text: str) -> None:
    ctx = session.chat_ctx.copy()
    ctx.add_message(role="user", content=text)
    await session.update_chat_ctx(ctx)


async def reply(session: RealtimeSession) -> tuple[str, list[Any]]:
    """generate_reply(), then the generation's text and function calls."""
    async with asyncio.timeout(3):  # LiveKit's own deadline is 10 s
        generation = await session.generate_reply()
    texts: list[str] = []
    functions: list[Any] = []

    async def messages() -> None:
        async for message in generation.message_stream:
            async for text in message.text_stream:
                texts.append(text)

    async def function_calls() -> None:
        async for call in generation.function_stream:
            functions.append(call)

    async with asyncio.timeout(5):
        await asyncio.gather(messages(), function_calls())
    return "".join(texts), functions


async def test_text_turn() -> None:
    async with gateway() as gw, realtime(gw) as (session, errors):
        await say(session, "Hello there")
        text, _ = await reply(session)
    assert text == "[livegate simulator] You said: Hello there"
    created = next(e for e in gw.recording.received() if e["type"] == "response.created")
    assert created["response"]["metadata"]["client_event_id"].startswith("response_create_"), \
        "generate_reply() waits for its metadata in response.created"
    assert not errors
    no_errors(gw.recording)


async def test_tool_call() -> None:
    calls.clear()
    async with gateway() as gw, realtime(gw) as (session, errors):
        await say(session, TOOL_PROMPT)
        _, functions = await reply(session)
    assert [(f.name, f.arguments) for f in functions] == [("get_weather", '{"city":"sample"}')]
    assert not errors
    no_errors(gw.recording)


async def test_tool_round_trip() -> None:
    """Gemini continues by itself after the tool output; generate_reply's response.create still gets its own
    response.created (with its metadata), as from OpenAI."""
    async with gateway() as gw, realtime(gw) as (session, errors):
        await say(session, TOOL_PROMPT)
        _, functions = await reply(session)
        ctx = session.chat_ctx.copy()
        ctx.insert(llm.FunctionCallOutput(call_id=functions[0].call_id, name=functions[0].name,
                                          output='{"temperature_c": 21}', is_error=False))
        await session.update_chat_ctx(ctx)  # what AgentSession does with the tool's result
        text, _ = await reply(session)
    assert text == '[livegate simulator] The tool get_weather returned: {"output": {"temperature_c": 21}}'
    assert not errors
    no_errors(gw.recording)


async def test_barge_in() -> None:
    async with gateway(chunk_delay=0.05) as gw, realtime(gw) as (session, errors):
        await say(session, LONG_PROMPT)
        generation = await session.generate_reply()
        message = await anext(aiter(generation.message_stream))
        async with asyncio.timeout(5):
            await anext(aiter(message.text_stream))
        session.interrupt()  # AgentSession's reaction to the user talking over the answer
        async with asyncio.timeout(5):
            async for _ in message.text_stream:  # the stream ends with the cancelled response
                pass
        await say(session, "Next")
        text, _ = await reply(session)
    assert "response.cancel" in gw.recording.types("client")
    assert [e["response"]["status"] for e in gw.recording.received() if e["type"] == "response.done"] == [
        "cancelled", "completed"]
    assert text == "[livegate simulator] You said: Next"
    assert not errors
    no_errors(gw.recording)
