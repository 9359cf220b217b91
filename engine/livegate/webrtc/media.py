"""A call's media: the caller's Opus (decoded by aiortc) -> 16 kHz PCM for Gemini, and livegate's playback
-> a 48 kHz track that aiortc encodes as Opus, paced in real time.

    caller's mic --Opus/SRTP--> aiortc (jitter buffer, decode: 48 kHz, stereo) --Microphone--> mono,
        gaps filled, /3 --> 16 kHz PCM16 --> input_audio_buffer.append (channel.py)
    Gemini 24 kHz PCM --Playback (x2)--> 48 kHz --SpeakerTrack, one 20 ms frame a tick--> aiortc (Opus/SRTP)
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from livegate.translation.audio import GEMINI_INPUT_RATE, Resampler, to_int16
from livegate.webrtc.playback import FRAME_SAMPLES, RATE, Playback

log = logging.getLogger("livegate.webrtc")

MAX_GAP_S = 2.0  # lost or suppressed (DTX) input is filled with silence up to this; longer jumps resync
LATE_RESYNC_S = 0.1  # the outgoing clock gives up catching up after falling this far behind


class Microphone:
    """One caller's audio frames -> 16 kHz PCM16 for Gemini.

    Frames carry their RTP time (aiortc's `pts`, unwrapped): a gap (packets lost, or not sent during
    silence) becomes that much silence, so Gemini's sense of time (VAD, audio offsets) stays the caller's;
    a frame from before the current point (a late duplicate) is dropped."""

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._rate = 0
        self._next_pts: int | None = None

    def convert(self, samples: np.ndarray, channels: int, rate: int, pts: int | None) -> bytes:
        """Interleaved int16 samples of one frame -> PCM16 bytes at 16 kHz (empty when nothing is due)."""
        if channels == 2:  # what aiortc's Opus decoder gives: a sum of slices costs less than a mean
            mono = (samples[0::2].astype(np.float64) + samples[1::2]) * 0.5
        elif channels > 2:
            mono = samples.reshape(-1, channels).mean(axis=1)
        else:
            mono = samples.astype(np.float64)
        if rate != self._rate:
            try:
                self._resampler = Resampler(rate, GEMINI_INPUT_RATE)
            except ValueError:
                log.warning("call audio at %d Hz cannot be converted to 16 kHz; dropped", rate)
                self._resampler = None
            self._rate, self._next_pts = rate, None
        if self._resampler is None:
            return b""
        if pts is not None:
            count, gap = len(mono), int(MAX_GAP_S * rate)
            missing = 0 if self._next_pts is None else pts - self._next_pts
            if -gap <= missing < 0:  # late: only what of it is new
                mono = mono[-missing:]
            elif 0 < missing <= gap:
                mono = np.concatenate([np.zeros(missing), mono])
            if self._next_pts is None or pts + count > self._next_pts or missing < -gap:  # (a jump beyond the
                self._next_pts = pts + count                                              # gap limit resyncs)
        if not len(mono):
            return b""
        return to_int16(self._resampler(mono))


def frame_samples(frame: AudioFrame) -> tuple[np.ndarray, int]:
    """(interleaved int16 samples, channel count) of a decoded frame."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.name != "s16":  # aiortc's Opus decoder gives packed s16; anything else is converted
        data = np.clip(data * 32768 if data.dtype.kind == "f" else data, -32768, 32767).astype(np.int16)
        if frame.format.is_planar:
            data = data.T
    return data.reshape(-1), channels


class SpeakerTrack(MediaStreamTrack):
    """livegate's voice on the call: a 20 ms frame every 20 ms, from the Playback (silence when it is empty).

    The frame is taken from the buffer when it is due, so a clear() is heard at the next frame."""

    kind = "audio"

    def __init__(self, playback: Playback, on_notice: Callable[[str, str], None]) -> None:
        super().__init__()
        self.playback = playback
        self._on_notice = on_notice
        self.on_frame: Callable[[float], None] | None = None  # each frame of answer audio, at its send time
        self._start: float | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, RATE)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._pts += FRAME_SAMPLES
            due = self._start + self._pts / RATE
            if now - due > LATE_RESYNC_S:  # the loop was busy: go on from now rather than burst to catch up
                self._start = now - self._pts / RATE
            elif due > now:
                await asyncio.sleep(due - now)
        audible = self.playback.playing()
        samples = self.playback.next_frame()
        for kind, response_id in self.playback.take_notices():
            self._on_notice(kind, response_id)
        if audible and self.on_frame is not None:
            self.on_frame(time.monotonic())
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        return frame
