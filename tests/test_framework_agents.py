"""openai-agents (`RealtimeRunner` over `OpenAIRealtimeWebSocketModel`) pointed at livegate on the simulator,
with only its URL and key changed (issue 10 §3). Installed by the `frameworks` extra."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.frameworks_support import KEY, LONG_PROMPT, TOOL_PROMPT, Gateway, gateway, no_errors
from tests.test_e2e_live import pcm16

pytest.importorskip("agents.realtime", reason="openai-agents is in the `frameworks` extra")

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner, RealtimeSession
from agents.realtime.openai_realtime import OpenAIRealtimeWebSocketModel

calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    calls.append(city)
    return "sunny, 21 C"


async def start(gw: Gateway) -> RealtimeSession:
    agent = RealtimeAgent(name="assistant", instructions="Answer briefly.", tools=[get_weather])
    runner = RealtimeRunner(agent, model=OpenAIRealtimeWebSocketModel())
    return await runner.run(model_config={"url": gw.realtime_url, "api_key": KEY,
                                          "initial_model_settings": {"modalities": ["text"]}})


async def until(session: RealtimeSession, turns: int = 1, timeout: float = 5) -> list[Any]:
    """The session's events until `turns` agent turns ended."""
    events: list[Any] = []
    async with asyncio.timeout(timeout):
        async for event in session:
            events.append(event)
            if event.type == "agent_end":
                turns -= 1
                if not turns:
                    return events
    raise AssertionError("the session ended")


def texts(events: list[Any]) -> str:
    return "".join(e.data.delta for e in events if e.type == "raw_model_event" and e.data.type == "output_text_delta")


def app_errors(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == "error"]


async def conversation() -> tuple[Gateway, list[Any], list[Any]]:
    """A text turn, then a tool round trip (the agent runs the tool and asks for the answer itself)."""
    calls.clear()
    async with gateway() as gw:
        session = await start(gw)
        async with session:
            await session.send_message("Hello there")
            first = await until(session)
            await session.send_message(TOOL_PROMPT)
            second = await until(session, turns=2)  # the call, then the answer to its output
        return gw, first, second


async def test_text_turn_and_tool_round_trip() -> None:
    gw, first, second = await conversation()
    assert texts(first) == "[livegate simulator] You said: Hello there"
    assert [e.output for e in second if e.type == "tool_end"] == ["sunny, 21 C"]
    assert calls == ["sample"], "one request, one call"
    assert texts(second) == '[livegate simulator] The tool get_weather returned: {"output": "sunny, 21 C"}'
    sent = gw.recording.types("client")
    assert sent.count("response.create") == 3, "the agent asks for the answer after the tool output itself"
    assert not gw.recording.errors()


async def test_no_error_reaches_the_application() -> None:
    """openai-agents repeats its own default model name in every session.update: ignored, never an error."""
    gw, first, second = await conversation()
    assert not app_errors(first + second)
    no_errors(gw.recording)


async def test_barge_in() -> None:
    async with gateway(chunk_delay=0.05) as gw:
        session = await start(gw)
        async with session:
            await session.send_message(LONG_PROMPT)
            async with asyncio.timeout(5):
                async for event in session:
                    if event.type == "raw_model_event" and event.data.type == "output_text_delta":
                        break
            speech = pcm16(1.0, 8000) + pcm16(0.7, 0)  # the user talks over the answer (server VAD)
            for start_at in range(0, len(speech), 9600):
                await session.send_audio(speech[start_at:start_at + 9600])
            events = await until(session, turns=2)  # the interrupted turn, then the answer to the speech
    done = [e["response"]["status"] for side, e in gw.recording.frames
            if side == "server" and e.get("type") == "response.done"]
    assert done == ["cancelled", "completed"], done
    assert any(e.type == "audio_interrupted" for e in events) or "input_audio_buffer.speech_started" in [
        e.get("type") for e in gw.recording.received()]
    assert texts(events).endswith("I heard 1.5 s of audio.")
    assert all(e["error"]["param"] == "session.model" for e in gw.recording.errors())
