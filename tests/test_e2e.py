"""End to end: the official openai SDK (GA and beta) -> livegate over loopback -> the Gemini Live simulator.

Parametrised over the Gemini backends: AI Studio (API key) and Vertex AI (google-auth service account
against a local token endpoint), each reached through the real upstream layer.
"""

from __future__ import annotations

import asyncio
import base64
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import collect, serve

API_KEY = "AIza-e2e-secret-key"


@pytest.fixture(params=["aistudio", "vertex"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[dict[str, Any]]:
    """A running livegate whose only model is served by a simulator on the chosen backend."""
    backend = request.param
    async with GeminiLiveSimulator(chunk_delay=0, api_key=None) as sim:
        if backend == "aistudio":
            params = {"model": "gemini/gemini-live-2.5-flash", "api_key": API_KEY, "api_base": sim.url}
            fake_auth = None
        else:
            from tests.fakes.google import FakeTokenServer, write_service_account

            fake_auth = FakeTokenServer()
            await fake_auth.start()
            creds = write_service_account(tmp_path / "sa.json", token_uri=fake_auth.token_uri)
            params = {"model": "vertex_ai/gemini-live-2.5-flash", "vertex_project": "demo-project",
                      "vertex_location": "us-central1", "vertex_credentials": str(creds), "api_base": sim.url}
        config = parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": params}],
                               "general_settings": {"master_key": "sk-livegate-test"}})
        try:
            async with serve(create_app(config, simulator_chunk_delay=0)) as url:
                yield {"url": url, "ws": url.replace("http", "ws") + "/v1", "sim": sim, "backend": backend}
        finally:
            if fake_auth is not None:
                await fake_auth.stop()


def _client(gateway: dict[str, Any]) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="sk-livegate-test", websocket_base_url=gateway["ws"])


def _pcm16(seconds: float, amplitude: int, rate: int = 24000) -> bytes:
    count = int(seconds * rate)
    return struct.pack(f"<{count}h", *(int(amplitude * math.sin(2 * math.pi * 440 * i / rate)) for i in range(count)))


async def test_text_turn_ga(gateway: dict[str, Any]) -> None:
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "instructions": "Answer briefly."})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Hello there"}]})
        await conn.response.create()
        events = await collect(conn)
    types = [e.type for e in events]
    assert types[:2] == ["session.created", "session.updated"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1, "the answer is streamed in several chunks"
    done_text = next(e.text for e in events if e.type == "response.output_text.done")
    assert done_text == "".join(deltas) == "[livegate simulator] You said: Hello there"
    done = events[-1].response
    assert done.status == "completed" and done.usage.total_tokens > 0
    assert done.output[0].content[0].text == done_text
    setup = gateway["sim"].sessions[0].setup
    assert setup["systemInstruction"]["parts"][0]["text"] == "Answer briefly."
    if gateway["backend"] == "vertex":
        resource = "projects/demo-project/locations/us-central1/publishers/google/models/gemini-live-2.5-flash"
        assert setup["model"] == resource
        assert gateway["sim"].sessions[0].headers["authorization"].startswith("Bearer ")
    else:
        assert setup["model"] == "models/gemini-live-2.5-flash"
        assert gateway["sim"].sessions[0].headers["x-goog-api-key"] == API_KEY


async def test_text_turn_beta(gateway: dict[str, Any]) -> None:
    async with _client(gateway).beta.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"modalities": ["text"], "instructions": "Answer briefly."})
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "Bonjour"}]})
        await conn.response.create()
        events = await collect(conn)
    types = [e.type for e in events]
    assert "response.text.delta" in types and "response.output_text.delta" not in types
    assert "conversation.item.created" in types and "conversation.item.done" not in types
    assert next(e.text for e in events if e.type == "response.text.done").endswith("You said: Bonjour")


async def test_audio_turn_with_server_vad(gateway: dict[str, Any]) -> None:
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"transcription": {"model": "whisper-1"}}, "output": {"voice": "coral"}}})
        speech = _pcm16(1.0, 8000) + _pcm16(0.7, 0)  # 1 s of tone, then silence: the VAD ends the turn 500 ms into it
        for start in range(0, len(speech), 9600):  # 200 ms chunks, as a microphone would send them
            await conn.input_audio_buffer.append(audio=base64.b64encode(speech[start:start + 9600]).decode())
        events = await collect(conn)
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    assert len(audio) > 4800 and len(audio) % 2 == 0, "PCM16 audio came back"
    transcript = next(e.transcript for e in events if e.type == "response.output_audio_transcript.done")
    assert transcript == "[livegate simulator] I heard 1.5 s of audio."
    user = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    assert "heard 1.5 s of audio" in user.transcript
    assert events[-1].response.output[0].content[0].type == "output_audio"
    assert gateway["sim"].sessions[0].setup["generationConfig"]["speechConfig"]["voiceConfig"][
        "prebuiltVoiceConfig"]["voiceName"] == "Aoede"


async def test_manual_audio_turn(gateway: dict[str, Any]) -> None:
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "audio": {"input": {"turn_detection": None}}})
        await conn.input_audio_buffer.append(audio=base64.b64encode(_pcm16(0.5, 8000)).decode())
        await conn.input_audio_buffer.commit()
        await conn.response.create()
        events = await collect(conn)
    assert "input_audio_buffer.committed" in [e.type for e in events]
    assert next(e.text for e in events if e.type == "response.output_text.done").endswith("I heard 0.5 s of audio.")


WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


async def _tool_call(conn: Any) -> tuple[list[Any], Any]:
    """A text session with get_weather: the user asks, Gemini calls it, the client sends its output.
    Returns the first response's events and the call."""
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER_TOOL]})
    await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Please call get_weather for Paris"}]})
    await conn.response.create()
    first = await collect(conn)
    call = next(e for e in first if e.type == "response.function_call_arguments.done")
    await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                              "output": '{"temperature_c": 21}'})
    return first, call


async def test_tool_round_trip(gateway: dict[str, Any]) -> None:
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        first, call = await _tool_call(conn)
        assert call.name == "get_weather" and call.arguments == '{"city":"sample"}'
        assert first[-1].response.output[-1].type == "function_call"
        await conn.response.create()
        second = await collect(conn)
    answer = next(e.text for e in second if e.type == "response.output_text.done")
    assert answer == '[livegate simulator] The tool get_weather returned: {"output": {"temperature_c": 21}}'
    tool_response = next(m for m in gateway["sim"].sessions[0].received if "toolResponse" in m)
    assert tool_response["toolResponse"]["functionResponses"][0]["name"] == "get_weather"


async def test_a_late_response_create_after_a_tool_output_gets_its_own_response_created(
        gateway: dict[str, Any]) -> None:
    """Gemini continues at once after the tool output; OpenAI waits for response.create. The continuation is
    held until the client asks, so the response opens with the request's metadata (LiveKit's generate_reply
    waits for exactly that) and there is one response, no error."""
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await _tool_call(conn)
        await asyncio.sleep(0.3)  # the simulator has answered the tool result by now
        await conn.response.create(response={"metadata": {"request": "after-tool"}})
        second = await collect(conn)
    created = [e for e in second if e.type == "response.created"]
    assert len(created) == 1 and created[0].response.metadata == {"request": "after-tool"}
    assert not [e for e in second if e.type == "error"]
    assert second[-1].response.metadata == {"request": "after-tool"}


async def test_a_continuation_nobody_asks_for_is_served_after_the_wait(gateway: dict[str, Any]) -> None:
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await _tool_call(conn)
        second = await collect(conn)  # no response.create: Gemini's continuation comes as its own response
    assert [e.type for e in second].count("response.created") == 1
    assert next(e.text for e in second if e.type == "response.output_text.done").endswith('{"temperature_c": 21}}')


async def test_a_system_message_is_accepted_and_reaches_gemini(gateway: dict[str, Any]) -> None:
    """Clients put system messages in the conversation; Gemini gets them as instructions, no error."""
    async with _client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                           "instructions": "Be brief."})
        await conn.conversation.item.create(item={"type": "message", "role": "system", "content": [
            {"type": "input_text", "text": "Answer in French."}]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Hello"}]})
        await conn.response.create()
        events = await collect(conn)  # raises on any error event
    added = [e for e in events if e.type == "conversation.item.added"]
    assert added[0].item.role == "system"
    instruction = gateway["sim"].sessions[-1].setup["systemInstruction"]["parts"][0]["text"]
    assert instruction == "Be brief.\n\nAnswer in French."
