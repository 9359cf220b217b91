"""The WebRTC media leg's audio, measured as tests/test_audio.py measures the G.711 path: real speech
(espeak-ng) against scipy's one-shot polyphase resampler, correlation and signal-to-noise after aligning
the filter's delay, chunked == one-shot (chunk edges add nothing), no aliasing; plus what a call adds:
lost packets become silence of their length, a cut fades out instead of clicking, the played position is
exact, and Opus (libopus through PyAV, as aiortc uses it) carries the result intelligibly."""

from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from tests.test_audio import _compare
from tests.webrtc_support import espeak

pytest.importorskip("aiortc", reason="the webrtc extra (aiortc) is not installed")
from livegate.webrtc.media import Microphone
from livegate.webrtc.playback import FADE_SAMPLES, FRAME_SAMPLES, Playback

SENTENCE = "The quick brown fox jumps over the lazy dog, and the call carries every word of it."


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The sentence at 48 kHz, float."""
    return espeak(SENTENCE, tmp_path_factory.mktemp("speech") / "sentence.wav") * 0.7


def _stereo_frames(samples: np.ndarray) -> list[np.ndarray]:
    """20 ms frames as aiortc's Opus decoder gives them: interleaved stereo int16."""
    pcm = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return [np.repeat(pcm[i:i + 960], 2) for i in range(0, len(pcm) - len(pcm) % 960, 960)]


def _pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def test_the_callers_speech_reaches_gemini_as_16khz(speech: np.ndarray) -> None:
    microphone = Microphone()
    frames = _stereo_frames(speech)
    got = _pcm(b"".join(microphone.convert(f, 2, 48000, i * 960) for i, f in enumerate(frames)))
    assert len(got) == len(frames) * 320
    # the reference delayed as the filter delays it (31 samples at 48 kHz)
    reference = resample_poly(np.concatenate([np.zeros(31), speech[:len(frames) * 960]]), 1, 3)
    corr, snr = _compare(got, reference)
    assert corr > 0.995 and snr > 25, (corr, snr)
    whole = _pcm(Microphone().convert(np.concatenate(frames), 2, 48000, 0))
    assert np.array_equal(got, whole), "frame boundaries change nothing"


def test_lost_and_late_packets_keep_the_callers_timeline(speech: np.ndarray) -> None:
    frames = _stereo_frames(speech)
    microphone = Microphone()
    out = b""
    for i, frame in enumerate(frames):
        if i % 10 in (3, 4):  # 20 % loss in bursts of two packets
            continue
        out += microphone.convert(frame, 2, 48000, i * 960)
        if i == 20:
            out += microphone.convert(frame, 2, 48000, i * 960)  # a duplicate, late
    got = _pcm(out)
    assert len(got) == len(frames) * 320, "each lost packet became 20 ms of silence, the duplicate nothing"
    assert not got[3 * 320 + 40:5 * 320 - 40].any(), "the gap is silence"
    jump = Microphone()
    jump.convert(frames[0], 2, 48000, 0)
    assert len(jump.convert(frames[1], 2, 48000, 10 * 48000)) == 640, "a jump of minutes resyncs, unfilled"


def test_the_microphone_does_not_alias_above_8khz() -> None:
    t = np.arange(48000) / 48000
    whistle = np.sin(2 * np.pi * 12000 * t) * 12000  # would fold to 4 kHz at 16 kHz
    microphone = Microphone()
    out = _pcm(b"".join(microphone.convert(f, 2, 48000, i * 960) for i, f in enumerate(_stereo_frames(whistle))))
    level = np.sqrt(np.mean(out[200:] ** 2))
    assert level < 12000 / np.sqrt(2) / 100, f"a 12 kHz tone must be filtered out, not folded: rms {level:.0f}"


def _gemini_speech(speech: np.ndarray) -> bytes:
    return np.clip(np.rint(resample_poly(speech, 1, 2)), -32768, 32767).astype("<i2").tobytes()


def _play(playback: Playback, frames: int) -> np.ndarray:
    return np.concatenate([playback.next_frame() for _ in range(frames)]).astype(np.float64)


def test_gemini_speech_is_played_at_48khz_without_seams(speech: np.ndarray) -> None:
    wideband = _gemini_speech(speech)
    playback = Playback()
    for start in range(0, len(wideband), 1920):  # Gemini's chunks: 40 ms at 24 kHz
        playback.add("resp_1", "item_1", wideband[start:start + 1920])
    playback.end("resp_1")
    got = _play(playback, len(wideband) // 2 * 2 // 960 + 2)
    reference = np.concatenate([np.zeros(31), resample_poly(_pcm(wideband), 2, 1)])  # the filter's delay at 48 kHz
    corr, snr = _compare(got, reference)
    assert corr > 0.995 and snr > 25, (corr, snr)
    whole = Playback()
    whole.add("resp_1", "item_1", wideband)
    whole.end("resp_1")
    assert np.array_equal(got, _play(whole, len(got) // 960)), "chunk boundaries change nothing"
    notices = playback.take_notices()
    assert notices == [("started", "resp_1"), ("drained", "resp_1")] and playback.drained("resp_1")


def test_a_cut_fades_out_and_knows_what_was_played(speech: np.ndarray) -> None:
    playback = Playback()
    playback.add("resp_1", "item_1", _gemini_speech(speech))
    played = _play(playback, 37)  # 740 ms
    cut = playback.clear()
    after = _play(playback, 3)
    assert cut.truncated == [("item_1", 740)] and cut.responses == ["resp_1"]
    assert not after[FADE_SAMPLES:].any(), "silence right after the fade"
    steps = np.abs(np.diff(np.concatenate([played[-200:], after[:FADE_SAMPLES + 10]])))
    typical = np.percentile(np.abs(np.diff(played)), 99)
    assert steps.max() <= typical * 1.5, "no click at the cut: no step larger than the speech's own"
    playback.add("resp_1", "item_1", _gemini_speech(speech))  # the rest of a cleared answer is dropped
    assert not _play(playback, 5).any()
    assert playback.clear().truncated == [], "nothing to clear"


def test_opus_carries_the_played_speech(speech: np.ndarray) -> None:
    """The outgoing frames through libopus and back (aiortc's codec, via PyAV) still match the speech."""
    from av import AudioFrame, CodecContext

    playback = Playback()
    playback.add("resp_1", "item_1", _gemini_speech(speech))
    playback.end("resp_1")
    encoder = CodecContext.create("libopus", "w")
    encoder.bit_rate, encoder.format, encoder.layout, encoder.sample_rate = 96000, "s16", "mono", 48000
    encoder.time_base = fractions.Fraction(1, 48000)
    decoder = CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "mono", 48000
    sent, received = [], []
    for index in range(len(speech) // FRAME_SAMPLES):
        samples = playback.next_frame()
        sent.append(samples.astype(np.float64))
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, index * FRAME_SAMPLES, fractions.Fraction(1, 48000)
        for packet in encoder.encode(frame):  # type: ignore[attr-defined]
            for decoded in decoder.decode(packet):  # type: ignore[attr-defined]
                received.append(decoded.to_ndarray().reshape(-1).astype(np.float64))
    corr, snr = _compare(np.concatenate(received), np.concatenate(sent), max_lag=800)
    assert corr > 0.95 and snr > 10, (corr, snr)


def test_the_speech_file_is_speech(tmp_path: Path) -> None:
    samples = espeak("Hello", tmp_path / "hello.wav")
    assert len(samples) > 48000 * 0.3 and np.abs(samples).max() > 3000
