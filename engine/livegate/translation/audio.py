"""Streaming audio conversion: G.711 (μ-law, A-law) at 8 kHz and WebRTC's 48 kHz <-> the PCM16 Gemini takes
and sends.

Mechanism only; the mappings decide when to call the telephony codecs (the `decode_audio` / `encode_audio` /
`flush_audio` transform steps of engine/livegate/mapping/transforms.py, which keep a stream's state in the
session), and the WebRTC media leg (engine/livegate/webrtc/) uses `Resampler` directly. The codec is the
standard library's `audioop` (`audioop-lts` from Python 3.13 on). Resampling (`Resampler`, any integer ratio
up or down) is a streaming FIR: a windowed-sinc low-pass (Kaiser window, the design of scipy's `firwin`,
which tests/test_audio.py holds it equal to; scipy is not imported at run time because it alone took about
1 s of livegate's start-up) applied by numpy's convolution over the chunk plus the previous chunk's last
samples, computing only the samples kept. So 20 ms chunks join without clicks (chunked and one-shot output
are identical) and the only latency is the filter's group delay (about 2 ms at 8 kHz, under 1 ms at
48 kHz), never a block.

    client G.711 8 kHz --decode--> PCM16 8 kHz --x2--> 16 kHz --> Gemini (audio/pcm;rate=16000)
    Gemini PCM16 24 kHz --/3--> 8 kHz --encode--> G.711 --> client
    WebRTC Opus 48 kHz (decoded) --/3--> 16 kHz --> Gemini;  Gemini 24 kHz --x2--> 48 kHz --> Opus
"""

from __future__ import annotations

import base64
import binascii
import sys
from typing import Any

import numpy as np

if sys.version_info >= (3, 13):  # pragma: no cover - audioop left the standard library in 3.13
    import audioop_lts as audioop  # type: ignore[import-not-found]
else:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

TELEPHONY_RATE = 8000
GEMINI_INPUT_RATE = 16000
GEMINI_OUTPUT_RATE = 24000
# codec -> (G.711 to linear, linear to G.711)
CODECS = {"pcmu": (audioop.ulaw2lin, audioop.lin2ulaw), "pcma": (audioop.alaw2lin, audioop.lin2alaw)}
_TAPS = 63  # odd, linear phase: (63 - 1) / 2 = 31 samples of delay at the filter's rate


_KAISER_BETA = 8.0


def _lowpass(rate: int, cutoff: float, length: int = _TAPS) -> np.ndarray:
    """Linear-phase low-pass: sinc at `cutoff` Hz times a Kaiser window, unity gain at DC."""
    n = np.arange(length) - (length - 1) / 2
    taps = np.sinc(2 * cutoff / rate * n) * np.kaiser(length, _KAISER_BETA)
    return taps / taps.sum()


class _Upsampler:
    """x`factor`: zero-stuffing then an anti-imaging low-pass, as `factor` interleaved sub-filters
    (polyphase: the stuffed zeros are never multiplied)."""

    def __init__(self, rate: int, factor: int) -> None:
        self.factor = factor
        self.length = _TAPS
        taps = _lowpass(rate * factor, 0.45 * rate, self.length) * factor
        taps = np.concatenate([taps, np.zeros(-len(taps) % factor)])  # equal-length sub-filters
        self.phases = [taps[p::factor] for p in range(factor)]
        self.history = np.zeros(len(self.phases[0]) - 1)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        padded = np.concatenate([self.history, samples])
        self.history = padded[len(padded) - len(self.history):]
        out = np.empty(len(samples) * self.factor)
        for p, taps in enumerate(self.phases):
            out[p :: self.factor] = np.convolve(padded, taps, mode="valid")[: len(samples)]
        return out


class _Downsampler:
    """/`factor`: an anti-aliasing low-pass computed only at the kept samples, keeping the phase."""

    def __init__(self, rate: int, factor: int) -> None:
        self.factor = factor
        self.length = _TAPS  # 63 taps at 48 kHz too: as close to scipy's resampler on speech as 189 (tests)
        self.taps = _lowpass(rate, 0.45 * rate / factor, self.length)
        self.history = np.zeros(self.length - 1)
        self.phase = 0  # index, in the next chunk, of the next sample to keep

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        padded = np.concatenate([self.history, samples])
        self.history = padded[len(padded) - (self.length - 1):]
        # Output sample i (of the chunk) needs padded[i : i + length]; keep i = phase, phase + factor, ...
        kept = np.arange(self.phase, len(samples), self.factor)
        if not len(kept):  # too few samples to reach the next kept one (and none at all: nothing to filter)
            self.phase -= len(samples)
            return np.empty(0)
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.length)[kept]
        self.phase = (self.phase - len(samples)) % self.factor
        return windows @ self.taps[::-1]


class Resampler:
    """One audio stream's sample-rate converter, `rate_in` -> `rate_out` where one divides the other.

    Chunks of any size join without a seam: the filter keeps the previous chunk's last samples (and, going
    down, which input sample comes next), so chunked and one-shot output are identical."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self._filter: _Upsampler | _Downsampler | None
        if rate_out == rate_in:
            self._filter = None
        elif rate_out % rate_in == 0:
            self._filter = _Upsampler(rate_in, rate_out // rate_in)
        elif rate_in % rate_out == 0:
            self._filter = _Downsampler(rate_in, rate_in // rate_out)
        else:
            raise ValueError(f"no integer ratio between {rate_in} and {rate_out} Hz")
        self.odd_byte = b""  # a PCM16 sample split across two chunks

    @property
    def delay_in(self) -> int:
        """Input samples still inside the filter: what `flush()` pushes out."""
        if self._filter is None:
            return 0
        half = self._filter.length // 2  # the group delay, in samples at the filter's (the higher) rate
        return half if isinstance(self._filter, _Upsampler) else half * self._filter.factor

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Float samples at `rate_in` -> float samples at `rate_out`."""
        return samples if self._filter is None else self._filter(samples)

    def pcm16(self, data: bytes) -> bytes:
        """Little-endian PCM16 in -> PCM16 out (an odd trailing byte waits for the next chunk)."""
        raw = self.odd_byte + data
        cut = len(raw) - len(raw) % 2
        raw, self.odd_byte = raw[:cut], raw[cut:]
        return to_int16(self(np.frombuffer(raw, dtype="<i2").astype(np.float64)))

    def flush(self) -> np.ndarray:
        """The filter's tail (its group delay worth of audio) at the end of a stream; then starts afresh."""
        tail = self(np.zeros(self.delay_in))
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget the stream (a new one starts from silence)."""
        if self._filter is not None:
            self._filter.history[:] = 0
            if isinstance(self._filter, _Downsampler):
                self._filter.phase = 0
        self.odd_byte = b""


def to_int16(samples: np.ndarray) -> bytes:
    """Float samples as little-endian PCM16 bytes, rounded and clipped."""
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def _codec(codec: str) -> tuple[Any, Any]:
    if codec not in CODECS:
        raise ValueError(f"unknown telephony codec {codec!r}")
    return CODECS[codec]


def _b64decode(data: str) -> bytes:
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), altchars=b"-_" if "-" in data or "_" in data else None)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("audio is not base64") from exc


class TelephonyDecoder:
    """Client G.711 (8 kHz) -> PCM16 at 16 kHz for Gemini, one per input stream."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.to_linear = _codec(codec)[0]
        self.upsample = Resampler(TELEPHONY_RATE, GEMINI_INPUT_RATE)

    def decode(self, data: str) -> str:
        pcm = np.frombuffer(self.to_linear(_b64decode(data), 2), dtype="<i2").astype(np.float64)
        return base64.b64encode(to_int16(self.upsample(pcm))).decode()


class TelephonyEncoder:
    """Gemini's PCM16 at 24 kHz -> G.711 (8 kHz) for the client, one per output stream."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.from_linear = _codec(codec)[1]
        self.downsample = Resampler(GEMINI_OUTPUT_RATE, TELEPHONY_RATE)

    def encode(self, data: str) -> str:
        return base64.b64encode(self.from_linear(self.downsample.pcm16(_b64decode(data)), 2)).decode()

    def flush(self) -> str:
        """The filter's tail (its group delay worth of audio) at the end of a response; resets the stream."""
        return base64.b64encode(self.from_linear(to_int16(self.downsample.flush()), 2)).decode()
