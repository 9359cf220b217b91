"""livegate's half of OpenAI's server-owned output audio buffer on a WebRTC call.

Gemini answers faster than real time; a WebSocket client buffers and plays the answer itself, but on a
call livegate does, so livegate knows what the user has heard. Gemini's 24 kHz PCM goes in as it arrives
(resampled to 48 kHz by the streaming `Resampler`, so chunks join without a seam) and comes out as 20 ms
frames, one per tick of the outgoing track. `clear()` (barge-in, `output_audio_buffer.clear`) drops what
has not been played, fading the next 5 ms out so the cut makes no click, and says for each assistant item
how much of it was played: where its truncation goes.

No I/O and no clock here: the track asks for frames (media.py), the call socket reports what happened
(channel.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from livegate.translation.audio import GEMINI_OUTPUT_RATE, Resampler

RATE = 48000  # Opus
FRAME_SAMPLES = RATE // 50  # 20 ms
FADE_SAMPLES = RATE // 200  # 5 ms: a cut shorter than this clicks
SAMPLES_PER_MS = RATE // 1000


@dataclass
class _Segment:
    """Unplayed audio of one assistant item."""

    response_id: str
    item_id: str
    samples: np.ndarray  # float, 48 kHz
    offset: int = 0  # samples of it already played


@dataclass
class Cut:
    """What `clear()` stopped: each item cut short, with the milliseconds of it that were played."""

    truncated: list[tuple[str, int]] = field(default_factory=list)  # (item_id, audio_end_ms)
    responses: list[str] = field(default_factory=list)


class Playback:
    def __init__(self) -> None:
        self._resampler = Resampler(GEMINI_OUTPUT_RATE, RATE)
        self._stream: str | None = None  # the response the resampler's state belongs to
        self._queue: deque[_Segment] = deque()
        self._played: dict[str, int] = {}  # item id -> samples played
        self._started: set[str] = set()  # responses whose first frame has left
        self._ended: set[str] = set()  # responses that will add no more audio
        self._cleared: set[str] = set()  # responses whose audio was cleared (later audio is dropped)
        self._fade: np.ndarray | None = None
        self.notices: list[tuple[str, str]] = []  # ("started" | "drained", response id), for the socket

    # -- in -------------------------------------------------------------------------------------------

    def add(self, response_id: str, item_id: str, pcm24: bytes) -> None:
        """One Gemini audio chunk of an assistant item (PCM16 at 24 kHz)."""
        if response_id in self._cleared or response_id in self._ended:
            return
        if self._stream != response_id:  # a new answer starts from silence, not from the last one's tail
            self._resampler.reset()
            self._stream = response_id
        samples = self._resampler(np.frombuffer(pcm24[: len(pcm24) - len(pcm24) % 2], dtype="<i2").astype(np.float64))
        if not len(samples):
            return
        last = self._queue[-1] if self._queue else None
        if last is not None and last.item_id == item_id:
            last.samples = np.concatenate([last.samples[last.offset:], samples])
            last.offset = 0
        else:
            self._queue.append(_Segment(response_id, item_id, samples))

    def end(self, response_id: str) -> None:
        """The response will add no more audio: the resampler's last samples go in, and the response
        counts as drained once they have played."""
        if response_id in self._ended:
            return
        self._ended.add(response_id)
        if self._stream == response_id:
            tail = self._resampler.flush()
            self._stream = None
            if self._queue and self._queue[-1].response_id == response_id and response_id not in self._cleared:
                last = self._queue[-1]
                last.samples = np.concatenate([last.samples[last.offset:], tail])
                last.offset = 0
        if response_id in self._started and self.drained(response_id):
            self.notices.append(("drained", response_id))

    def drained(self, response_id: str) -> bool:
        """Nothing of the response is left to play, and nothing more will come."""
        return response_id in self._ended and not any(s.response_id == response_id for s in self._queue)

    def playing(self) -> bool:
        return bool(self._queue)

    # -- out ------------------------------------------------------------------------------------------

    def next_frame(self) -> np.ndarray:
        """The next 20 ms to send (int16, 48 kHz mono): queued audio, the fade of a cut, or silence."""
        out = np.zeros(FRAME_SAMPLES)
        filled = 0
        if self._fade is not None:
            out[: len(self._fade)] = self._fade
            filled, self._fade = len(self._fade), None
        while filled < FRAME_SAMPLES and self._queue:
            segment = self._queue[0]
            take = min(FRAME_SAMPLES - filled, len(segment.samples) - segment.offset)
            out[filled : filled + take] = segment.samples[segment.offset : segment.offset + take]
            segment.offset += take
            filled += take
            self._played[segment.item_id] = self._played.get(segment.item_id, 0) + take
            if segment.response_id not in self._started:
                self._started.add(segment.response_id)
                self.notices.append(("started", segment.response_id))
            if segment.offset >= len(segment.samples):
                self._queue.popleft()
                if self.drained(segment.response_id):
                    self.notices.append(("drained", segment.response_id))
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def take_notices(self) -> list[tuple[str, str]]:
        notices, self.notices = self.notices, []
        return notices

    def clear(self) -> Cut:
        """Stop now: drop every unplayed sample (the next frame fades out what would have followed), drop
        later audio of the responses cut, and say where each cut item stops."""
        cut = Cut()
        if not self._queue:
            return cut
        head = self._queue[0]
        following = head.samples[head.offset : head.offset + FADE_SAMPLES]
        self._fade = following * np.linspace(1.0, 0.0, len(following), endpoint=False) if len(following) else None
        for segment in self._queue:
            if not cut.truncated or cut.truncated[-1][0] != segment.item_id:
                cut.truncated.append((segment.item_id, self._played.get(segment.item_id, 0) // SAMPLES_PER_MS))
            if segment.response_id not in cut.responses:
                cut.responses.append(segment.response_id)
        self._queue.clear()
        self._cleared.update(cut.responses)
        if self._stream in cut.responses:
            self._resampler.reset()
            self._stream = None
        return cut

    def played_ms(self, item_id: str) -> int:
        return self._played.get(item_id, 0) // SAMPLES_PER_MS

    def was_started(self, response_id: str) -> bool:
        return response_id in self._started
