"""WebRTC calls end to end with a real peer: aiortc as the caller (Opus over SRTP, the `oai-events` data
channel), livegate in between, the Gemini Live simulator behind it, all on loopback.

The caller speaks a sentence by espeak-ng; Gemini must hear it as 16 kHz PCM of the sentence's length; the
answer (the simulator's 440 Hz voice, 60 ms a word) comes back as Opus and must be as long and as loud as
its transcript says, not silence. The output_audio_buffer.* events arrive in OpenAI's order, no audio delta
rides the data channel, and every event is a valid OpenAI server event. Barge-in (the caller talks over the
answer) and output_audio_buffer.clear stop the audio at once and truncate the assistant item at the point
played. A key's client secret opens the call, and the call leaves a spend row like a WebSocket session.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.conformance import check_client_event
from tests.support import serve
from tests.webrtc_support import LOOPBACK_SETTINGS, RATE, Caller, espeak

MASTER = "sk-master-webrtc"
SENTENCE = "Could you tell me what the weather will be like tomorrow morning?"
LONG_PROMPT = " ".join(["Please read this long sentence back to me slowly"] * 8)  # a 3 s answer
VOICED_RMS = 1000.0  # a 20 ms frame louder than this carries the answer (the simulator speaks at ~5800)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with GeminiLiveSimulator(chunk_delay=0.005, api_key=None) as sim:
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
                "model": "gemini/gemini-3.8-live", "api_key": "AIza-webrtc", "api_base": sim.url}},
                {"model_name": "gpt-realtime-mini", "litellm_params": {
                    "model": "gemini/gemini-3.8-live", "api_key": "AIza-webrtc", "api_base": sim.url}}],
            "general_settings": {"master_key": MASTER},
            "livegate_settings": {"store_path": str(tmp_path / "livegate.db"), **LOOPBACK_SETTINGS}})
        app = create_app(config, simulator_chunk_delay=0)
        async with serve(app) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {MASTER}"}) as http:
            key = (await http.post("/key/generate", json={"models": ["gpt-realtime"]})).json()["key"]
            yield {"url": url, "http": http, "app": app, "sim": sim, "key": key}


def _voiced(samples: np.ndarray) -> np.ndarray:
    """Which 20 ms frames of a signal carry sound."""
    frames = samples[: len(samples) // 960 * 960].reshape(-1, 960)
    return np.sqrt(np.mean(frames**2, axis=1)) > VOICED_RMS


async def test_a_call_hears_the_caller_and_answers_in_opus(gateway: dict[str, Any], tmp_path: Path) -> None:
    http = gateway["http"]
    secret = (await http.post("/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {gateway['key']}"},
                              json={"session": {"type": "realtime", "instructions": "Be brief."}})).json()["value"]
    speech = espeak(SENTENCE, tmp_path / "sentence.wav")
    caller = Caller(gateway["url"], secret)
    response = await caller.connect(session={"type": "realtime", "model": "gpt-realtime", "audio": {
        "input": {"transcription": {"model": "whisper-1"}}}}, model=None)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp") and response.text.startswith("v=0")
    assert re.fullmatch(r"/v1/realtime/calls/rtc_[0-9a-f]+", response.headers["location"])
    await caller.wait_for("session.created", timeout=10)
    caller.microphone.say(speech * 0.7)
    await caller.wait_for("response.done")
    stopped = await caller.wait_for("output_audio_buffer.stopped", timeout=10)
    await caller.hang_up()

    types = caller.types()
    for _, event in caller.events:
        check_client_event(event)
    assert "response.output_audio.delta" not in types, "answer audio goes over the media track, as OpenAI's WebRTC"
    order = [types.index(t) for t in ("response.content_part.added", "output_audio_buffer.started",
                                      "response.output_audio.done", "response.done", "output_audio_buffer.stopped")]
    assert order == sorted(order), types
    done = next(e for _, e in caller.events if e["type"] == "response.done")
    assert stopped["response_id"] == done["response"]["id"]
    instructions = next(e for _, e in caller.events if e["type"] == "session.updated")["session"]["instructions"]
    assert instructions == "Be brief.", "the client secret's session applies to the call"

    # Gemini heard the whole sentence, as 16 kHz PCM
    sim_session = gateway["sim"].sessions[0]
    mimes = {m["realtimeInput"]["audio"]["mimeType"] for m in sim_session.received
             if "audio" in m.get("realtimeInput", {})}
    assert mimes == {"audio/pcm;rate=16000"}
    heard = next(e["transcript"] for _, e in caller.events
                 if e["type"] == "conversation.item.input_audio_transcription.completed")
    seconds = float(re.search(r"heard ([0-9.]+) s", heard).group(1))  # type: ignore[union-attr]
    spoken = np.sum(np.abs(speech) > 300) / RATE  # roughly the voiced part the simulator's VAD keeps
    assert len(speech) / RATE - 0.6 < seconds < len(speech) / RATE + 0.8, (seconds, spoken)

    # The answer is sound of the transcript's length (60 ms a word), at the simulator's level and pitch
    transcript = next(e["transcript"] for _, e in caller.events if e["type"] == "response.output_audio_transcript.done")
    expected_s = min(3.0, len(transcript.split()) * 0.06)
    audio = caller.audio()
    voiced = _voiced(audio)
    assert abs(voiced.sum() * 0.02 - expected_s) <= 0.1, (voiced.sum() * 0.02, expected_s, transcript)
    frames = audio[: len(voiced) * 960].reshape(-1, 960)[voiced]
    answer = frames.reshape(-1)
    # the level of a typical voiced frame: the first and last are only partly sound (the tone starts and ends
    # anywhere in a 20 ms frame), which pulled a short answer's overall level below the band
    level = np.median(np.sqrt(np.mean(frames**2, axis=1)))
    assert 0.25 * 32767 / np.sqrt(2) * 0.7 < level < 0.25 * 32767 / np.sqrt(2) * 1.3, level
    peak_hz = np.argmax(np.abs(np.fft.rfft(answer))) * RATE / len(answer)
    assert abs(peak_hz - 440) < 10, peak_hz

    # The call is metered like a WebSocket session: a spend row for the key behind the secret
    await asyncio.sleep(0.3)
    await gateway["app"].state.gateway.accounting.writer.flush()
    rows = (await http.get("/spend/logs", params={"api_key": gateway["key"]})).json()
    assert len(rows) == 1 and rows[0]["route"] == "/v1/realtime/calls" and rows[0]["input_audio_tokens"] > 0
    assert rows[0]["spend"] > 0 and rows[0]["metadata"]["client_secret"] is True


async def _answer_playing(caller: Caller) -> dict[str, Any]:
    """Ask for a 3 s answer by text; returns output_audio_buffer.started once it plays."""
    await caller.wait_for("session.created", timeout=10)
    caller.send({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": LONG_PROMPT}]}})
    caller.send({"type": "response.create"})
    return await caller.wait_for("output_audio_buffer.started")


def _sent_frames(gateway: dict[str, Any]) -> list[float]:
    """Hook livegate's outgoing track (the one call open): the send time of every frame carrying answer audio."""
    (call,) = gateway["app"].state.webrtc_calls.calls.values()
    sent: list[float] = []
    call.speaker.on_frame = sent.append
    return sent


async def test_barge_in_cuts_the_answer_and_truncates_what_was_heard(gateway: dict[str, Any], tmp_path: Path) -> None:
    interruption = espeak("Wait, stop, stop.", tmp_path / "stop.wav")
    caller = Caller(gateway["url"], gateway["key"])
    assert (await caller.connect()).status_code == 201
    sent = _sent_frames(gateway)
    started = await _answer_playing(caller)
    await caller.wait_for("response.done")  # Gemini is done long before the user has heard it all
    await asyncio.sleep(1.0)
    caller.microphone.say(interruption * 0.7)
    cleared = await caller.wait_for("output_audio_buffer.cleared")
    truncated = await caller.wait_for("conversation.item.truncated")
    cut_at = caller.arrival("output_audio_buffer.cleared")
    await asyncio.sleep(0.5)
    await caller.hang_up()

    types = caller.types()
    assert cleared["response_id"] == started["response_id"]
    assert types.index("input_audio_buffer.speech_started") < types.index("output_audio_buffer.cleared")
    assert "output_audio_buffer.stopped" not in types, "a cleared buffer never reports stopped"
    item = next(e for _, e in caller.events if e["type"] == "response.done")["response"]["output"][0]
    assert truncated["item_id"] == item["id"] and truncated["content_index"] == 0
    # The item is cut at the audio livegate had played out to the caller (its 20 ms frames sent), and that is
    # about where the caller's clock says it was: on a loaded machine livegate's pacing can fall behind the
    # caller's wall clock (one CI run: 230 ms), and the caller then heard exactly what was sent, later.
    played_ms = len(sent) * 20
    assert abs(truncated["audio_end_ms"] - played_ms) <= 20, (truncated, played_ms)
    heard_ms = (cut_at - caller.arrival("output_audio_buffer.started")) * 1000
    assert abs(truncated["audio_end_ms"] - heard_ms) < 400, (truncated, heard_ms)
    assert 800 < truncated["audio_end_ms"] < 2900, "cut in the middle, at the point played"
    # livegate stops sending audio at once...
    last_sent = max(sent)
    assert last_sent - cut_at < 0.1 and len(sent) * 0.02 < 2.9, (last_sent - cut_at, len(sent))
    # ...and the caller hears nothing of the answer past 100 ms after the cut (its own jitter buffer included)
    frames_after = [t for t, f in caller.frames if t > cut_at and np.sqrt(np.mean(f**2)) > VOICED_RMS]
    assert not frames_after or frames_after[-1] - cut_at < 0.1, frames_after[-1] - cut_at


async def test_output_audio_buffer_clear_stops_playback(gateway: dict[str, Any]) -> None:
    caller = Caller(gateway["url"], gateway["key"])
    response = await caller.connect(headers={"OpenAI-Beta": "realtime=v1"}, session={
        "modalities": ["audio", "text"], "turn_detection": None})
    assert response.status_code == 201
    sent = _sent_frames(gateway)
    started = await _answer_playing(caller)
    await caller.wait_for("response.done")  # generated already: only livegate's buffer still plays it
    await asyncio.sleep(0.5)
    caller.send({"type": "output_audio_buffer.clear", "event_id": "c2"})
    cleared = await caller.wait_for("output_audio_buffer.cleared")
    truncated = await caller.wait_for("conversation.item.truncated")
    cut_at = caller.arrival("output_audio_buffer.cleared")
    await asyncio.sleep(0.4)
    await caller.hang_up()
    for _, event in caller.events:
        check_client_event(event, "beta")
    assert "response.audio_transcript.delta" in caller.types(), "the beta dialect's names"
    assert cleared["response_id"] == started["response_id"]
    # cut where the caller was in the answer (how far that is depends on how fast Gemini generated it)
    # The item is cut at the audio livegate had played out to the caller (its 20 ms frames sent), and that is
    # about where the caller's clock says it was: on a loaded machine livegate's pacing can fall behind the
    # caller's wall clock (one CI run: 230 ms), and the caller then heard exactly what was sent, later.
    played_ms = len(sent) * 20
    assert abs(truncated["audio_end_ms"] - played_ms) <= 20, (truncated, played_ms)
    heard_ms = (cut_at - caller.arrival("output_audio_buffer.started")) * 1000
    assert abs(truncated["audio_end_ms"] - heard_ms) < 400, (truncated, heard_ms)
    assert 300 < truncated["audio_end_ms"] < 2900, "cut in the middle, at the point played"
    # livegate stops sending audio at once; the caller's last loud frame comes through its own jitter
    # buffer, and on a loaded machine through its event loop's lag too
    assert max(sent) - cut_at < 0.1, max(sent) - cut_at
    loud = [t for t, f in caller.frames if np.sqrt(np.mean(f**2)) > VOICED_RMS]
    assert loud and loud[-1] - cut_at < 0.4, loud[-1] - cut_at

