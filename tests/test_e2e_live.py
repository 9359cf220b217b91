"""End to end against today's models (issue 8): the official openai SDK -> livegate -> the simulator acting
as the model the config names (mappings/models.yaml)."""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import collect, serve

KEY = "sk-livegate-test"


def live_config(sim_url: str, model: str = "gemini-3.8-live", backend: str = "gemini", **entry: Any) -> Any:
    params = {"model": f"{backend}/{model}", "api_key": "AIza-e2e", "api_base": sim_url}
    return parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": params, **entry}],
                         "general_settings": {"master_key": KEY}})


@pytest.fixture
async def sim() -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator(chunk_delay=0) as simulator:
        yield simulator


@pytest.fixture
async def livegate(sim: GeminiLiveSimulator) -> AsyncIterator[str]:
    async with serve(create_app(live_config(sim.url), simulator_chunk_delay=0)) as url:
        yield url.replace("http", "ws") + "/v1"


def client(ws_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=KEY, websocket_base_url=ws_url)


async def ask(conn: Any, text: str) -> list[Any]:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await collect(conn)


async def test_text_only_client_on_an_audio_only_model(livegate: str, sim: GeminiLiveSimulator) -> None:
    async with client(livegate).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        events = await ask(conn, "Hello there")
    types = [e.type for e in events]
    assert not [t for t in types if "audio" in t], "no audio reaches a text-only client"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    done = next(e.text for e in events if e.type == "response.output_text.done")
    assert done == "".join(deltas) == "[livegate simulator] You said: Hello there"
    response = events[-1].response
    assert response.output[0].content[0].type == "output_text" and response.output[0].content[0].text == done
    assert response.usage.output_token_details.audio_tokens > 0, "Gemini bills the audio it produced"
    setup = sim.sessions[0].setup
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"] and "outputAudioTranscription" in setup
    assert sim.sessions[0].close_code is None, "Gemini never closed the session"


async def test_refused_by_name_before_gemini(sim: GeminiLiveSimulator) -> None:
    config = live_config(sim.url, "gemini-3.5-live-translate-preview")
    async with serve(create_app(config, simulator_chunk_delay=0)) as url, \
            client(url.replace("http", "ws") + "/v1").realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "Be brief."}, event_id="u1")
        created = await conn.recv()
        error = await conn.recv()
        assert created.type == "session.created" and created.session.output_modalities == ["audio"]
        assert error.type == "error" and error.error.param == "session.instructions" and error.error.event_id == "u1"
    config = live_config(sim.url, "gemini-3.5-transcribe-live")
    async with serve(create_app(config, simulator_chunk_delay=0)) as url, \
            client(url.replace("http", "ws") + "/v1").realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime"}, event_id="u2")
        created = await conn.recv()
        error = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        assert error.type == "error" and error.error.param == "session.type" and error.error.event_id == "u2"
    assert not sim.sessions, "nothing reached Gemini"


async def test_later_turns_on_a_model_that_ignores_client_content(sim: GeminiLiveSimulator) -> None:
    config = live_config(sim.url, "gemini-3.1-flash-live-preview")
    async with serve(create_app(config, simulator_chunk_delay=0)) as url, \
            client(url.replace("http", "ws") + "/v1").realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        answers = []
        for text in ("First", "Second", "Third"):
            events = await ask(conn, text)
            answers.append(next(e.text for e in events if e.type == "response.output_text.done"))
    assert answers == [f"[livegate simulator] You said: {t}" for t in ("First", "Second", "Third")]
    sent = [next(iter(m)) for m in sim.sessions[0].received]
    assert sent.count("realtimeInput") == 2, "later turns go as realtime text, which the model does not ignore"


def pcm16(seconds: float, amplitude: int, rate: int = 24000) -> bytes:
    count = int(seconds * rate)
    return struct.pack(f"<{count}h", *(int(amplitude * math.sin(2 * math.pi * 440 * i / rate)) for i in range(count)))


async def speak(conn: Any, seconds: float = 1.0) -> None:
    speech = pcm16(seconds, 8000) + pcm16(0.7, 0)  # tone, then the silence that ends the turn
    for start in range(0, len(speech), 9600):
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech[start:start + 9600]).decode())


@pytest.mark.parametrize(("model", "transcription"), [
    ("gemini-3.8-live", True), ("gemini-3.8-live", False), ("gemini-live-2.5-flash", True)])
async def test_server_vad_events_name_the_user_item(sim: GeminiLiveSimulator, model: str,
                                                    transcription: bool) -> None:
    audio_in = {"transcription": {"model": "whisper-1"}} if transcription else {}
    async with serve(create_app(live_config(sim.url, model), simulator_chunk_delay=0)) as url, \
            client(url.replace("http", "ws") + "/v1").realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "audio": {"input": audio_in}})
        await speak(conn)
        events = await collect(conn)
    types = [e.type for e in events]
    vad = [e for e in events if e.type.startswith("input_audio_buffer.")]
    assert [e.type for e in vad] == ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                                     "input_audio_buffer.committed"]
    user = next(e for e in events if e.type == "conversation.item.added" and e.item.role == "user")
    assert {e.item_id for e in vad} == {user.item.id}
    assert types.index("input_audio_buffer.committed") < types.index("conversation.item.added")
    heard = [e for e in events if e.type.startswith("conversation.item.input_audio_transcription")]
    if transcription:
        assert {e.item_id for e in heard} == {user.item.id}
        assert next(e.transcript for e in heard if e.type.endswith("completed")).endswith("heard 1.5 s of audio")
    else:
        assert not heard, "input transcription off means off, whatever the model sends"
        assert "inputTranscription" not in sim.sessions[0].setup


async def test_response_cancel_is_answered_at_once() -> None:
    async with GeminiLiveSimulator(chunk_delay=0.05) as slow, \
            serve(create_app(live_config(slow.url), simulator_chunk_delay=0)) as url, \
            client(url.replace("http", "ws") + "/v1").realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Tell me a long story about the sea and the wind"}]})
        await conn.response.create()
        async for event in conn:
            if event.type == "response.output_text.delta":
                break
        started = time.monotonic()
        await conn.response.cancel()
        async for event in conn:
            if event.type == "response.done":
                break
        elapsed = time.monotonic() - started
        assert event.response.status == "cancelled" and event.response.status_details.reason == "client_cancelled"
        assert elapsed < 0.1, f"response.done came {elapsed * 1000:.0f} ms after response.cancel"
        again = await ask(conn, "Next")  # the rest of the cancelled turn never leaks into the next response
    assert next(e.text for e in again if e.type == "response.output_text.done").endswith("You said: Next")
    assert again[-1].response.usage is not None and again[-1].response.usage.total_tokens > 0
