"""PCM16 helpers for the simulator: a deterministic reply waveform and a tiny energy VAD."""

from __future__ import annotations

import math
import sys
from array import array

OUTPUT_RATE = 24000  # Gemini Live always answers with 16-bit LE mono PCM at 24 kHz
OUTPUT_MIME = f"audio/pcm;rate={OUTPUT_RATE}"
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.25
CHUNK_MS = 40  # size of each streamed output audio chunk
MS_PER_WORD = 60  # reply length is proportional to the reply text...
MAX_REPLY_MS = 3000  # ...but capped, so tests and demos stay small

VAD_THRESHOLD_RMS = 500.0  # ~ -36 dBFS; quieter 10 ms frames count as silence
VAD_MIN_SPEECH_MS = 100
VAD_SILENCE_MS = 500
VAD_FRAME_MS = 10


def _samples(pcm: bytes) -> array:
    """Interpret little-endian PCM16 bytes (an odd trailing byte is dropped)."""
    samples = array("h", pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _to_bytes(samples: array) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def pcm_seconds(n_bytes: int, rate: int) -> float:
    return n_bytes / (2 * rate)


def rms(pcm: bytes) -> float:
    samples = _samples(pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def tone(ms: int, rate: int = OUTPUT_RATE, hz: float = TONE_HZ, amplitude: float = TONE_AMPLITUDE) -> bytes:
    """`ms` milliseconds of a sine wave as PCM16 LE mono."""
    n = rate * ms // 1000
    peak = amplitude * 32767
    step = 2 * math.pi * hz / rate
    return _to_bytes(array("h", (round(peak * math.sin(step * i)) for i in range(n))))


def scaled(pcm: bytes, factor: float) -> bytes:
    """`pcm` with every sample multiplied by `factor` (a near-silent answer: a factor near 0)."""
    return _to_bytes(array("h", (round(s * factor) for s in _samples(pcm))))


def reply_audio(text: str) -> list[bytes]:
    """The spoken form of a reply: a 440 Hz tone, 60 ms per word (capped), cut into 40 ms chunks."""
    ms = min(MAX_REPLY_MS, max(1, len(text.split())) * MS_PER_WORD)
    pcm = tone(ms)
    size = OUTPUT_RATE * 2 * CHUNK_MS // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


class EnergyVad:
    """Deterministic end-of-turn detector for automatic activity detection.

    Audio is cut into 10 ms frames. Silence before the first voiced frame is dropped (the turn starts at
    speech). 500 ms of consecutive silence ends the turn if at least 100 ms of voiced frames were seen
    (otherwise the blip is forgotten); the turn's audio runs from the first voiced frame to the end of
    that silence.
    """

    def __init__(self) -> None:
        self.turn = bytearray()  # audio of the current user turn (empty until speech starts)
        self._pending = bytearray()  # bytes not yet forming a whole frame
        self._voiced_ms = 0
        self._silent_ms = 0
        self.rate = 16000

    def reset(self) -> None:
        self.turn.clear()
        self._voiced_ms = self._silent_ms = 0

    def feed(self, pcm: bytes, rate: int) -> tuple[bool, list[bytes]]:
        """Feed audio. Returns (speech confirmed during this call, audio of every turn that ended)."""
        if rate != self.rate:
            self._pending.clear()
            self.rate = rate
        self._pending += pcm
        frame = rate * 2 * VAD_FRAME_MS // 1000
        started = False
        ended: list[bytes] = []
        while len(self._pending) >= frame:
            chunk = bytes(self._pending[:frame])
            del self._pending[:frame]
            voiced = rms(chunk) >= VAD_THRESHOLD_RMS
            if not self.turn and not voiced:
                continue
            self.turn += chunk
            if voiced:
                self._voiced_ms += VAD_FRAME_MS
                self._silent_ms = 0
                # speech counts as started (e.g. for barge-in) once it is long enough not to be a click
                started = started or self._voiced_ms == VAD_MIN_SPEECH_MS
            else:
                self._silent_ms += VAD_FRAME_MS
            if self._silent_ms >= VAD_SILENCE_MS:
                if self._voiced_ms >= VAD_MIN_SPEECH_MS:
                    ended.append(bytes(self.turn))
                self.reset()  # too little speech before the silence: it was a click, forget it
        return started, ended

    def flush(self) -> bytes:
        """End the current turn now (audioStreamEnd); returns its audio (empty if no speech)."""
        audio = bytes(self.turn)
        self.reset()
        self._pending.clear()
        return audio
