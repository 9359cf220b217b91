"""Telephony audio (G.711 μ-law / A-law, 8 kHz) both ways, measured on real speech.

A sentence spoken by espeak-ng is the reference. It goes through the translator as a phone bridge
would send it (μ-law, 20 ms chunks) and comes out as Gemini's 16 kHz PCM; Gemini's 24 kHz PCM goes
through as 20 ms chunks and comes out as the client's G.711. Each result is compared with the same
speech resampled by scipy's one-shot polyphase resampler: correlation and signal-to-noise, after
aligning the filter's delay. Chunked and one-shot conversion must agree sample for sample, so chunk
boundaries add nothing (no clicks). Last, the openai SDK holds a μ-law conversation end to end.
"""

from __future__ import annotations

import audioop
import base64
import re
import shutil
import subprocess
import wave
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from scipy.signal import firwin, resample_poly

from livegate.config import parse_config
from livegate.mapping import load_mappings
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.translation.audio import _KAISER_BETA, _TAPS, TelephonyDecoder, TelephonyEncoder, _lowpass
from livegate.translation.translator import Translator
from tests.support import serve

SENTENCE = "The quick brown fox jumps over the lazy dog, and the phone line carries every word of it."
MAPPINGS = load_mappings()


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, int]:
    """The sentence as float samples and their rate (espeak-ng's own, 22050 Hz)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (.ci/run installs it)")
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    subprocess.run([espeak, "-w", str(path), SENTENCE], check=True, capture_output=True)
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)
    assert len(samples) > rate, "espeak-ng spoke for over a second"
    return samples, rate


def _resampled(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    g = np.gcd(rate, target)
    return resample_poly(samples, target // g, rate // g)


def _compare(got: np.ndarray, reference: np.ndarray, max_lag: int = 80) -> tuple[float, float]:
    """(correlation, SNR in dB) of `got` against `reference`, at the lag that aligns them best."""
    best = (-1.0, 0)
    n = min(len(got), len(reference)) - max_lag
    for lag in range(max_lag):
        corr = float(np.corrcoef(got[lag:lag + n], reference[:n])[0, 1])
        best = max(best, (corr, lag))
    corr, lag = best
    a, b = got[lag:lag + n], reference[:n]
    scale = np.dot(a, b) / np.dot(b, b)
    snr = 10 * np.log10(np.sum((scale * b) ** 2) / np.sum((a - scale * b) ** 2))
    return corr, snr


def _pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def _translator(session: dict[str, Any]) -> Translator:
    translator = Translator(MAPPINGS, deterministic=True,
                            context={"model": "gpt-realtime", "setup_model": "models/m", "backend": "aistudio"})
    translator.start()
    translator.from_client({"type": "session.update", "session": {"type": "realtime", **session}})
    return translator


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_telephony_input_reaches_gemini_as_16khz_speech(speech: tuple[np.ndarray, int], codec: str) -> None:
    samples, rate = speech
    narrowband = np.clip(np.rint(_resampled(samples, rate, 8000)), -32768, 32767).astype("<i2").tobytes()
    g711 = (audioop.lin2ulaw if codec == "pcmu" else audioop.lin2alaw)(narrowband, 2)
    translator = _translator({"audio": {"input": {"format": {"type": f"audio/{codec}"}}}})
    sent = []
    for start in range(0, len(g711), 160):  # 20 ms at 8 kHz, as a phone bridge sends it
        out = translator.from_client({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(g711[start:start + 160]).decode()})
        sent += [m["realtimeInput"]["audio"] for m in out.upstream if "realtimeInput" in m]
    assert {a["mimeType"] for a in sent} == {"audio/pcm;rate=16000"}
    got = _pcm(b"".join(base64.b64decode(a["data"]) for a in sent))
    assert len(got) == 2 * len(g711)
    corr, snr = _compare(got, _resampled(samples, rate, 16000))
    assert corr > 0.97 and snr > 15, (corr, snr)  # G.711 itself is about 35 dB on speech; 8 kHz cuts the top band
    whole = _pcm(base64.b64decode(TelephonyDecoder(codec).decode(base64.b64encode(g711).decode())))
    assert np.array_equal(got, whole), "chunk boundaries change nothing"


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_gemini_speech_reaches_the_client_as_telephony_audio(speech: tuple[np.ndarray, int], codec: str) -> None:
    samples, rate = speech
    wideband = np.clip(np.rint(_resampled(samples, rate, 24000)), -32768, 32767).astype("<i2").tobytes()
    translator = _translator({"audio": {"output": {"format": {"type": f"audio/{codec}"}}}})
    translator.from_client({"type": "response.create"})
    deltas = []
    for start in range(0, len(wideband), 960):  # 20 ms at 24 kHz
        chunk = base64.b64encode(wideband[start:start + 960]).decode()
        out = translator.from_upstream({"serverContent": {"modelTurn": {"parts": [
            {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": chunk}}]}}})
        deltas += [e["delta"] for e in out.client if e["type"] == "response.output_audio.delta"]
    out = translator.from_upstream({"serverContent": {"turnComplete": True}})
    deltas += [e["delta"] for e in out.client if e["type"] == "response.output_audio.delta"]
    g711 = b"".join(base64.b64decode(d) for d in deltas)
    got = _pcm((audioop.ulaw2lin if codec == "pcmu" else audioop.alaw2lin)(g711, 2))
    assert abs(len(got) - len(wideband) // 6) <= 40, "8 kHz: a third of the samples, plus the flushed tail"
    # The reference at 24 kHz delayed as the filter delays it (31 samples, a third of a sample at 8 kHz).
    reference = _resampled(np.concatenate([np.zeros(31), _pcm(wideband)]), 24000, 8000)
    corr, snr = _compare(got, reference)
    assert corr > 0.97 and snr > 15, (corr, snr)
    encoder = TelephonyEncoder(codec)
    whole = base64.b64decode(encoder.encode(base64.b64encode(wideband).decode()) + encoder.flush())
    assert g711 == whole, "chunk boundaries change nothing"


def test_speech_above_4khz_does_not_alias_into_the_phone_band() -> None:
    t = np.arange(24000) / 24000
    whistle = (np.sin(2 * np.pi * 6000 * t) * 12000).astype("<i2").tobytes()  # would fold to 2 kHz
    encoder = TelephonyEncoder("pcmu")
    out = b"".join(base64.b64decode(encoder.encode(base64.b64encode(whistle[i:i + 960]).decode()))
                   for i in range(0, len(whistle), 960))
    level = np.sqrt(np.mean(_pcm(audioop.ulaw2lin(out, 2))[200:] ** 2))
    assert level < 12000 / np.sqrt(2) / 100, f"a 6 kHz tone must be filtered out, not folded: rms {level:.0f}"


async def test_a_mulaw_conversation_through_the_openai_sdk(speech: tuple[np.ndarray, int]) -> None:
    samples, rate = speech
    narrowband = np.clip(np.rint(_resampled(samples, rate, 8000)), -32768, 32767).astype("<i2")
    silence = np.zeros(8000, dtype="<i2")  # the simulator's VAD ends the turn in the pause
    g711 = audioop.lin2ulaw(np.concatenate([narrowband, silence]).tobytes(), 2)
    async with GeminiLiveSimulator(chunk_delay=0, api_key=None) as sim:
        config = parse_config({"model_list": [{"model_name": "phone", "litellm_params": {
            "model": "gemini/gemini-live-2.5-flash", "api_key": "AIza-k", "api_base": sim.url}}]})
        async with serve(create_app(config, simulator_chunk_delay=0)) as url:
            client = AsyncOpenAI(api_key="unused", websocket_base_url=url.replace("http", "ws") + "/v1")
            async with client.realtime.connect(model="phone") as conn:
                await conn.session.update(session={"type": "realtime", "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1"}},
                    "output": {"format": {"type": "audio/pcmu"}}}})
                for start in range(0, len(g711), 1600):  # 200 ms chunks
                    await conn.input_audio_buffer.append(audio=base64.b64encode(g711[start:start + 1600]).decode())
                events = []
                async for event in conn:
                    events.append(event)
                    assert event.type != "error", event
                    if event.type == "response.done":
                        break
    audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
    answer = _pcm(audioop.ulaw2lin(audio, 2))
    spectrum = np.abs(np.fft.rfft(answer))
    peak_hz = np.argmax(spectrum) * 8000 / len(answer)
    assert abs(peak_hz - 440) < 10, f"the simulator's 440 Hz answer arrives as 8 kHz μ-law (peak {peak_hz:.0f} Hz)"
    transcript = next(e.transcript for e in events if e.type == "conversation.item.input_audio_transcription.completed")
    heard = float(re.search(r"heard ([0-9.]+) s of audio", transcript).group(1))  # type: ignore[union-attr]
    assert abs(heard - len(narrowband) / 8000) < 0.8, f"Gemini heard the whole sentence at 16 kHz: {transcript}"


@pytest.mark.parametrize(("rate", "cutoff"), [(16000, 3600.0), (24000, 3600.0), (8000, 3000.0)])
def test_the_lowpass_is_scipys_firwin_design(rate: int, cutoff: float) -> None:
    """livegate designs its filters with numpy (scipy costs a second of start-up); the taps are scipy's."""
    expected = firwin(_TAPS, cutoff, fs=rate, window=("kaiser", _KAISER_BETA))
    np.testing.assert_allclose(_lowpass(rate, cutoff), expected, rtol=0, atol=1e-12)

