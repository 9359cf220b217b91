"""Turns of a native Gemini Live passthrough session (/v1/gemini/live, /vertex_ai/live), read from the raw
frames it relays, with the substring tests its usage ledger already uses: the same `turn` spans and
time-to-first-audio histogram as a translated session, from the usage the passthrough already reads.

A turn starts at the client's input end (`turnComplete` in clientContent, `activityEnd` or `audioStreamEnd`
in realtimeInput, a `toolResponse`); with Gemini's automatic voice activity detection the client sends no
such end, and the turn starts at its first answer byte (no time-to-first-audio is observed then). Its first
answer byte is the first modelTurn, outputTranscription or toolCall; it ends at Gemini's turnComplete (or
interrupted), with the usage the ledger holds for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from livegate.observability.turns import TurnSink
from livegate.translation.usage import TokenUsage, UsageLedger

_INPUT_ENDS = ('"turnComplete"', '"activityEnd"', '"audioStreamEnd"', '"toolResponse"')
_ANSWERS = ('"modelTurn"', '"outputTranscription"', '"toolCall"')
_ENDS = ('"turnComplete"', '"interrupted"')


def _mentions(frame: str | bytes, needle: str) -> bool:
    return (needle.encode() in frame) if isinstance(frame, bytes) else (needle in frame)


def openai_usage(usage: TokenUsage) -> dict[str, Any]:
    """A Gemini turn's usage in OpenAI's shape (what a turn span of a translated session reads)."""
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "input_token_details": {"text_tokens": usage.input_text, "audio_tokens": usage.input_audio,
                                    "image_tokens": usage.input_image, "cached_tokens": usage.input_cached},
            "output_token_details": {"text_tokens": usage.output_text, "audio_tokens": usage.output_audio}}


class PassthroughTurns:
    def __init__(self, ledger: UsageLedger, first_audio: Callable[[float], None] | None = None,
                 sink: TurnSink | None = None) -> None:
        self.ledger = ledger
        self.first_audio = first_audio
        self.sink = sink
        self._input_end: tuple[float, int] | None = None  # (monotonic, wall ns)
        self._turn: str | None = None
        self._started = 0.0
        self._audio_seen = False
        self._count = 0
        self._explicit_start = False  # the turn began at a client input end (not at its first answer byte)

    def client_frame(self, frame: str | bytes) -> None:
        if any(_mentions(frame, needle) for needle in _INPUT_ENDS):
            self._input_end = (time.monotonic(), time.time_ns())

    def upstream_frame(self, frame: str | bytes) -> None:
        """After the ledger observed the frame (its usage report is the turn's)."""
        if self._turn is None and any(_mentions(frame, needle) for needle in _ANSWERS):
            self._open()
            if self.sink is not None:
                self.sink.first_byte(str(self._turn), time.time_ns(), False)
        if self._turn is not None and not self._audio_seen and _mentions(frame, '"inlineData"') \
                and _mentions(frame, '"modelTurn"'):
            self._audio_seen = True
            if self._explicit_start and self.first_audio is not None:
                self.first_audio(time.monotonic() - self._started)
            if self.sink is not None:
                self.sink.first_byte(str(self._turn), time.time_ns(), True)
        if self._turn is not None and any(_mentions(frame, needle) for needle in _ENDS):
            interrupted = _mentions(frame, '"interrupted"')
            if self.sink is not None:
                usage = self.ledger.pending
                self.sink.turn_done({"id": self._turn, "status": "cancelled" if interrupted else "completed",
                                     "usage": openai_usage(usage) if usage is not None else None}, time.time_ns())
            self._turn = None

    def _open(self) -> None:
        self._count += 1
        self._turn = f"turn_{self._count}"
        self._explicit_start = self._input_end is not None
        monotonic, wall = self._input_end or (time.monotonic(), time.time_ns())
        self._input_end = None
        self._started, self._audio_seen = monotonic, False
        if self.sink is not None:
            self.sink.turn_started(self._turn, wall)
