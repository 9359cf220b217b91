"""End to end through the official openai SDK (issue 11 §3 and §4): a voice client's barge-in that truncates
the assistant's item and clears its input buffer, and transcription sessions (GA, ?intent=transcription and
beta), against the simulator acting as the models the config names."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve
from tests.test_e2e import _pcm16

KEY = "sk-livegate-test"
CHUNK = 9600  # 200 ms of 24 kHz PCM16


def _config(sim_url: str) -> Any:
    def entry(name: str, model: str) -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {"model": f"gemini/{model}", "api_key": "AIza-e2e",
                                                       "api_base": sim_url}}
    return parse_config({"model_list": [entry("gpt-realtime", "gemini-3.8-live"),
                                        entry("transcriber", "gemini-3.5-transcribe-live"),
                                        entry("gpt-4o-transcribe", "gemini-live-2.5-flash")],
                         "general_settings": {"master_key": KEY}})


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, GeminiLiveSimulator]]:
    async with GeminiLiveSimulator(chunk_delay=0.02) as sim, serve(create_app(_config(sim.url))) as url:
        yield url.replace("http", "ws") + "/v1", sim


def _client(ws_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=KEY, websocket_base_url=ws_url)


async def _speak(conn: Any, speech: bytes) -> None:
    for start in range(0, len(speech), CHUNK):
        await conn.input_audio_buffer.append(audio=base64.b64encode(speech[start:start + CHUNK]).decode())


async def _until(conn: Any, done: str, seen: list[Any]) -> Any:
    async with asyncio.timeout(10):
        async for event in conn:
            seen.append(event)
            if event.type == "error":
                raise AssertionError(f"unexpected error event: {event.error}")
            if event.type == done:
                return event
    raise AssertionError("connection closed before " + done)


async def test_barge_in_truncates_and_clears(gateway: tuple[str, GeminiLiveSimulator]) -> None:
    """The user talks over the answer: on speech_started the client truncates the assistant's item where
    playback stopped and clears its input buffer, as voice clients do; the session answers the next turn,
    and the truncated item is retrievable."""
    ws_url, _ = gateway
    async with _client(ws_url).realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime",
                                           "audio": {"input": {"transcription": {"model": "whisper-1"}}}})
        await _speak(conn, _pcm16(1.0, 8000) + _pcm16(0.7, 0))
        seen: list[Any] = []
        first = await _until(conn, "response.output_audio.delta", seen)
        await _speak(conn, _pcm16(0.4, 8000))  # barge in while the answer streams
        await _until(conn, "input_audio_buffer.speech_started", seen)
        await conn.conversation.item.truncate(item_id=first.item_id, content_index=0, audio_end_ms=120)
        await conn.input_audio_buffer.clear()
        truncated = await _until(conn, "conversation.item.truncated", seen)
        assert (truncated.item_id, truncated.audio_end_ms) == (first.item_id, 120)
        await _until(conn, "input_audio_buffer.cleared", seen)
        await _speak(conn, _pcm16(0.7, 0))  # the VAD heard the barge-in already: it ends that turn
        cancelled = await _until(conn, "response.done", seen)  # held for the interrupted turn's usage
        assert cancelled.response.status == "cancelled"
        after: list[Any] = []
        done = await _until(conn, "response.done", after)
        assert done.response.status == "completed"
        assert any(e.type == "response.output_audio.delta" for e in after)
        await conn.conversation.item.retrieve(item_id=first.item_id)
        retrieved = await _until(conn, "conversation.item.retrieved", [])
    assert retrieved.item.id == first.item_id and retrieved.item.status == "incomplete"
    assert retrieved.item.content[0].type == "output_audio" and retrieved.item.content[0].transcript


async def test_transcription_session_ga(gateway: tuple[str, GeminiLiveSimulator]) -> None:
    """On a transcription model a session starts as a transcription session; speech comes back as
    transcription events only, with language and keywords sent as Gemini's transcription config."""
    ws_url, sim = gateway
    async with _client(ws_url).realtime.connect(model="transcriber") as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"transcription": {
            "model": "gpt-4o-transcribe", "language": "en", "keywords": ["livegate"]}}}})
        seen: list[Any] = []
        await _until(conn, "session.updated", seen)
        await _speak(conn, _pcm16(1.0, 8000) + _pcm16(0.7, 0))
        completed = await _until(conn, "conversation.item.input_audio_transcription.completed", seen)
    assert completed.transcript == "[livegate simulator] heard 1.5 s of audio"
    assert "conversation.item.input_audio_transcription.delta" in [e.type for e in seen]
    assert not [e.type for e in seen if e.type.startswith("response.")]
    setup = sim.sessions[-1].setup
    assert setup["inputAudioTranscription"] == {"languageCodes": ["en"], "customVocabulary": ["livegate"]}
    assert setup["generationConfig"] == {"responseModalities": ["TEXT"]}


async def test_transcription_intent_on_a_conversational_model(gateway: tuple[str, GeminiLiveSimulator]) -> None:
    """?intent=transcription without a model is routed by the name gpt-4o-transcribe (here a native-audio
    model configured for input transcription only): the model's spoken answer is dropped."""
    ws_url, _ = gateway
    async with _client(ws_url).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.session.type == "transcription"
        seen: list[Any] = []
        await _speak(conn, _pcm16(1.0, 8000) + _pcm16(0.7, 0))
        completed = await _until(conn, "conversation.item.input_audio_transcription.completed", seen)
        await conn.input_audio_buffer.append(audio=base64.b64encode(_pcm16(0.1, 0)).decode())
        await asyncio.sleep(0.5)  # the model's answer streams meanwhile, and must not reach the client
        await conn.conversation.item.retrieve(item_id=completed.item_id)
        retrieved = await _until(conn, "conversation.item.retrieved", seen)
    assert "heard 1.5 s of audio" in completed.transcript
    assert retrieved.item.content[0].transcript == completed.transcript
    assert not [e.type for e in seen if e.type.startswith("response.")]


async def test_transcription_session_beta(gateway: tuple[str, GeminiLiveSimulator]) -> None:
    ws_url, _ = gateway
    async with _client(ws_url).beta.realtime.connect(model="transcriber") as conn:
        await conn.transcription_session.update(session={
            "input_audio_transcription": {"model": "whisper-1", "language": "en"}, "turn_detection": None})
        seen: list[Any] = []
        updated = await _until(conn, "transcription_session.updated", seen)
        assert updated.session.input_audio_transcription.language == "en"
        await _speak(conn, _pcm16(0.5, 8000))
        await conn.input_audio_buffer.commit()
        completed = await _until(conn, "conversation.item.input_audio_transcription.completed", seen)
    assert completed.transcript == "[livegate simulator] heard 0.5 s of audio"
    assert not [e.type for e in seen if e.type.startswith("response.")]
