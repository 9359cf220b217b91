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


@functools.lru_cache(maxsize=64)  # every chunk the meter hears names its rate
def rate_of(mime: str | None, default: int = DEFAULT_RATE) -> int:
    """The sample rate a PCM MIME type names (`audio/pcm;rate=24000`), else `default`."""
    found = _RATE.search(mime or "")
    return int(found.group(1)) if found else default


def _samples(data: bytes) -> array[int]:
    samples = array("h", data[: len(data) - len(data) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


# The meter decodes this many 8-character pieces of each chunk's base64 (6 bytes, 3 samples each), evenly
# spread, instead of the whole chunk: over a one-second window that is 1,200 samples of a 24 kHz answer, which
# put its mean level within a few percent, and near-silence (about 18) lies two orders of magnitude under
# speech (2,000-10,000). Decoding and summing every sample cost about a third of a relay's whole round trip
# for the chunk, on every chunk of the window.
PIECES = 8


def sampled_level(audio_b64: str) -> tuple[float, int]:
    """(mean absolute sample value of evenly spread samples, number of samples the chunk holds) of a base64
    PCM16 chunk; (0.0, 0) for an empty or undecodable one."""
    padding = 2 if audio_b64.endswith("==") else 1 if audio_b64.endswith("=") else 0
    total = (len(audio_b64) // 4 * 3 - padding) // 2
    whole = len(audio_b64) - 4  # the last quantum may hold padding: pieces come from before it
    if whole < 8 * PIECES * 2:
        heard = audio_b64
    else:  # pieces start at multiples of 8 characters: 6 bytes, so each starts on a sample
        step = whole // PIECES // 8 * 8
        heard = "".join([audio_b64[at:at + 8] for at in range(0, step * PIECES, step)])
    try:
        samples = _samples(base64.b64decode(b64_standard(heard)))
    except ValueError:
        return 0.0, 0
    if not samples:
        return 0.0, 0
    return sum(map(abs, samples)) / len(samples), total


class LevelMeter:
    """The mean absolute sample value of one response's audio, over its first `window_ms` (estimated from
    spread samples of each chunk, weighted by the chunk's length). With `certain_level`, the verdict comes as
    soon as the audio heard alone, counted over the whole window, reaches it: the rest of the window could
    only raise the mean, so the answer is not near-silent, and speech is judged after its first chunk
    instead of being metered for the whole window."""

    __slots__ = ("certain_level", "judged", "ms", "response", "samples", "total", "window_ms")

    def __init__(self, response: str, window_ms: float, certain_level: float = 0.0) -> None:
        self.response = response
        self.window_ms = window_ms
        self.certain_level = certain_level
        self.ms = 0.0
        self.total = 0.0
        self.samples = 0
        self.judged = False

    def hear(self, audio_b64: str, mime: str | None) -> dict[str, Any] | None:
        """Add one chunk; the verdict once the window is full or the mean is certain to reach the level
        (null before, and after it was given)."""
        if self.judged:
            return None
        level, samples = sampled_level(audio_b64)
        if not samples:
            return None
        rate = rate_of(mime, 24000)
        self.total += level * samples
        self.samples += samples
        self.ms += samples * 1000 / rate
        window_samples = self.window_ms * rate / 1000
        if self.ms < self.window_ms and not (0 < self.certain_level <= self.total / window_samples):
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
