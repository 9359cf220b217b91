"""The watchdog's answer meter (translation/audio_level.py): when its verdict comes, and what it says."""

from __future__ import annotations

import base64
import struct

from livegate.translation.audio_level import LevelMeter

RATE = "audio/pcm;rate=24000"


def _chunk(amplitude: int, ms: int = 20) -> str:
    count = 24 * ms  # 24 kHz
    return base64.b64encode(struct.pack(f"<{count}h", *((amplitude if i % 2 else -amplitude)
                                                         for i in range(count)))).decode()


def _hear_until_verdict(meter: LevelMeter, chunks: list[str]) -> tuple[int, dict | None]:
    for heard, chunk in enumerate(chunks, start=1):
        verdict = meter.hear(chunk, RATE)
        if verdict is not None:
            return heard, verdict
    return len(chunks), None


def test_speech_is_judged_after_its_first_chunk_when_it_alone_reaches_the_level() -> None:
    meter = LevelMeter("resp_1", window_ms=1000, certain_level=100)
    heard, verdict = _hear_until_verdict(meter, [_chunk(5000)] * 50)
    assert heard == 1
    assert verdict == {"mean_level": 5000.0, "ms": 20}
    assert meter.hear(_chunk(5000), RATE) is None  # the verdict comes once


def test_near_silence_is_heard_for_the_whole_window() -> None:
    meter = LevelMeter("resp_1", window_ms=1000, certain_level=100)
    heard, verdict = _hear_until_verdict(meter, [_chunk(18)] * 60)
    assert heard == 50
    assert verdict == {"mean_level": 18.0, "ms": 1000}


def test_a_quiet_start_is_judged_once_the_speech_after_it_makes_the_level_certain() -> None:
    # 200 ms of silence, then speech at 1,000: certain when (speech heard) * 1000 / window >= 100, i.e.
    # after 100 ms of speech (5 chunks), long before the window is full
    meter = LevelMeter("resp_1", window_ms=1000, certain_level=100)
    heard, verdict = _hear_until_verdict(meter, [_chunk(0)] * 10 + [_chunk(1000)] * 50)
    assert heard == 15
    assert verdict is not None and verdict["ms"] == 300 and verdict["mean_level"] >= 100


def test_without_a_level_the_whole_window_is_heard() -> None:
    meter = LevelMeter("resp_1", window_ms=1000)
    heard, verdict = _hear_until_verdict(meter, [_chunk(5000)] * 60)
    assert heard == 50 and verdict == {"mean_level": 5000.0, "ms": 1000}
