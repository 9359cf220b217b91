"""How loud an answer is, and the low-level noise that tells a voice activity detector the speaker stopped.

Pure PCM16 arithmetic on the standard library (`array`): the watchdog hears only the first second or so of
each answer, and numpy would add its import time to every gateway start (translation/audio.py is loaded
only by telephony sessions for that reason).
"""

from __future__ import annotations

import base64
import functools
import re
import sys
from array import array
from typing import Any

from livegate.mapping.functions import b64_standard

_RATE = re.compile(r"rate=(\d+)")
DEFAULT_RATE = 16000
NOISE_PEAK = 24  # about -63 dBFS: room tone, far below speech (mean absolute level of speech: 2,000-10,000)
NOISE_CHUNK_MS = 100


def rate_of(mime: str | None, default: int = DEFAULT_RATE) -> int:
    """The sample rate a PCM MIME type names (`audio/pcm;rate=24000`), else `default`."""
    found = _RATE.search(mime or "")
    return int(found.group(1)) if found else default


def _samples(data: bytes) -> array[int]:
    samples = array("h", data[: len(data) - len(data) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


class LevelMeter:
    """The mean absolute sample value of one response's audio, over its first `window_ms`."""

    __slots__ = ("judged", "ms", "response", "samples", "total", "window_ms")

    def __init__(self, response: str, window_ms: float) -> None:
        self.response = response
        self.window_ms = window_ms
        self.ms = 0.0
        self.total = 0
        self.samples = 0
        self.judged = False

    def hear(self, audio_b64: str, mime: str | None) -> dict[str, Any] | None:
        """Add one chunk; the verdict once the window is full (null before, and after it was given)."""
        if self.judged:
            return None
        samples = _samples(base64.b64decode(b64_standard(audio_b64)))
        if not samples:
            return None
        self.total += sum(map(abs, samples))
        self.samples += len(samples)
        self.ms += len(samples) * 1000 / rate_of(mime, 24000)
        if self.ms < self.window_ms:
            return None
        self.judged = True
        return {"mean_level": self.total / self.samples, "ms": round(self.ms)}


def low_level_noise(mime: str | None, ms: float) -> list[str]:
    """`ms` of deterministic low-level noise, as base64 PCM16 chunks of NOISE_CHUNK_MS at `mime`'s rate."""
    return list(_noise(rate_of(mime), ms))


@functools.lru_cache(maxsize=16)
def _noise(rate: int, ms: float) -> tuple[str, ...]:
    """The same noise every time, so it is made once per rate and length (a commit is on the audio path)."""
    per_chunk = rate * NOISE_CHUNK_MS // 1000
    total = int(rate * max(0.0, ms) / 1000)
    state = 0x2545F491
    chunks = []
    for start in range(0, total, per_chunk):
        values = array("h")
        for _ in range(min(per_chunk, total - start)):
            state = (state * 1103515245 + 12345) & 0x7FFFFFFF  # a small LCG: the same noise every time
            values.append((state >> 16) % (2 * NOISE_PEAK + 1) - NOISE_PEAK)
        if sys.byteorder == "big":
            values.byteswap()
        chunks.append(base64.b64encode(values.tobytes()).decode())
    return tuple(chunks)
