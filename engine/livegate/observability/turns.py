"""Turns as a client sees them, read from a session's OpenAI events (both dialects): when the user's input
ended, when the answer's first byte and first audio byte went out, and when the turn was complete.

A turn starts at the user's input end (the client's commit, response.create or item, or livegate's
speech_stopped / committed for server VAD), or, when Gemini speaks unprompted, at response.created; its first
answer byte is its first delta; it is complete at response.done. `TurnWatch` observes every session (cheap:
an audio delta costs a set lookup) to feed the time-to-first-audio histogram, and the tracer when tracing is
on. Tool calls are read the same way: from the call's arguments (function_call_arguments.done) to its output
(a function_call_output item from the client).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from livegate.translation.observer import ClientMessage, SessionObserver, message_dict, message_type

AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})
OTHER_DELTAS = frozenset({"response.output_text.delta", "response.text.delta", "response.output_audio_transcript.delta",
                          "response.audio_transcript.delta", "response.function_call_arguments.delta"})
INPUT_ENDS = frozenset({"input_audio_buffer.speech_stopped", "input_audio_buffer.committed"})
CLIENT_INPUT_ENDS = frozenset({"input_audio_buffer.commit", "response.create", "conversation.item.create"})


class TurnSink(Protocol):
    """What a turn watcher tells (the tracer implements it). Times are wall-clock nanoseconds."""

    def turn_started(self, response_id: str, started_ns: int) -> None: ...
    def first_byte(self, response_id: str, at_ns: int, audio: bool) -> None: ...
    def turn_done(self, response: dict[str, Any], at_ns: int) -> None: ...
    def tool_called(self, call_id: str, name: str, arguments: str, at_ns: int) -> None: ...
    def tool_answered(self, call_id: str, output: Any, at_ns: int) -> None: ...


class TurnWatch(SessionObserver):
    def __init__(self, first_audio: Callable[[float], None] | None = None, sink: TurnSink | None = None) -> None:
        self.first_audio = first_audio  # seconds from input end to the first audio byte (the histogram)
        self.sink = sink
        self._input_end: tuple[float, int] | None = None  # (monotonic, wall ns)
        self._response: str | None = None
        self._started: float = 0.0
        self._first_byte = False
        self._first_audio = False

    def client_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind not in CLIENT_INPUT_ENDS:
            return  # audio appends end here
        if kind == "conversation.item.create":
            item = event.get("item") or {}
            if item.get("type") == "function_call_output" and self.sink is not None:
                self.sink.tool_answered(str(item.get("call_id")), item.get("output"), time.time_ns())
            if item.get("role") != "user" and item.get("type") != "function_call_output":
                return
        self._input_end = (time.monotonic(), time.time_ns())

    def client_messages(self, messages: list[ClientMessage]) -> None:
        for message in messages:
            kind = message_type(message)
            if kind in AUDIO_DELTAS:
                if not self._first_audio and self._response is not None:
                    self._first_audio = True
                    self._answer_began(True)
                continue
            if kind in OTHER_DELTAS:
                if not self._first_byte and self._response is not None:
                    self._answer_began(False)
                continue
            message = message_dict(message)
            if kind == "response.created":
                self._open((message.get("response") or {}).get("id") or "")
            elif kind == "response.done":
                if self.sink is not None:
                    self.sink.turn_done(message.get("response") or {}, time.time_ns())
                self._response = None
            elif kind in INPUT_ENDS:
                self._input_end = (time.monotonic(), time.time_ns())
            elif kind == "response.function_call_arguments.done" and self.sink is not None:
                self.sink.tool_called(str(message.get("call_id")), str(message.get("name") or ""),
                                      str(message.get("arguments") or ""), time.time_ns())

    def _open(self, response_id: str) -> None:
        start = self._input_end or (time.monotonic(), time.time_ns())
        self._input_end = None
        self._response, self._started = response_id, start[0]
        self._first_byte = self._first_audio = False
        if self.sink is not None:
            self.sink.turn_started(response_id, start[1])

    def _answer_began(self, audio: bool) -> None:
        assert self._response is not None
        if audio and self.first_audio is not None:
            self.first_audio(time.monotonic() - self._started)
        if self.sink is not None:
            self.sink.first_byte(self._response, time.time_ns(), audio)
        self._first_byte = True
