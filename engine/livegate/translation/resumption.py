"""The session core's policy (mappings/resumption.yaml): the questions it asks of the session state, when it
moves a session to a new Gemini connection, and the bounded queue of input held meanwhile.

The session core (translation/session_core.py) reads the session state only through the named questions
declared there. Each is an expression checked at load like a rule's: every `session.<key>` it reads must be
declared in state.yaml, and every name in `QUESTIONS` must be answered, so renaming a key or a question in
YAML fails `livegate lint` with file:line instead of silently breaking switching.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livegate.mapping.errors import MappingError
from livegate.mapping.expressions import Expression, compile_expression
from livegate.mapping.fields import session_paths
from livegate.mapping.functions import base64_size
from livegate.mapping.state import StateSpec, session_keys
from livegate.mapping.yamlpos import Located
from livegate.paths import MAPPINGS_DIR

# What the session core asks, and why (the message when one is missing from resumption.yaml).
QUESTIONS: dict[str, str] = {
    "session_id": "the OpenAI session id, which a dropped client reattaches with",
    "turn_pending": "whether Gemini owes an answer (the stall clock runs)",
    "awaits_request": "whether Gemini's continuation after a tool output waits for the client's response.create",
    "awaiting_idle": "whether a response.done waits for usage (lifecycle/upstream_idle after idle_after_ms)",
    "user_idle_at_ms": "when (Unix ms) lifecycle/user_idle runs",
    "switch_wanted": "whether the session wants a new connection",
    "going_away": "goAway's timeLeft, while Gemini is ending the connection",
    "turn_boundary": "whether switching now cuts nothing",
    "handle": "the latest resumption handle (a new one means a recovered connection completed a turn)",
    "handle_usable": "whether a new connection may resume with the handle (its age aside)",
    "handle_received_at": "when (Unix s) the handle arrived, for handle_ttl_s",
    "max_output_tokens": "the session's cap on a response's output tokens (a reservation's worst case)",
    "checkpoint": "what another instance needs to take the session over (a change stores a snapshot)",
    "between_turns": "whether nothing is under way or owed (a turn boundary, the handle aside)",
    "handle_current": "whether the handle covers every item (a session taken over resumes with it)",
    "connected": "whether Gemini's setup went out (a session taken over reconnects at once)",
    "call_pending": "whether the connection carrying the session made a tool call that waits for its output",
    "awaiting_output": "whether Gemini owes the user an answer and has not begun it (the watchdog's stall clock)",
    "response_open": "the open response's id (output came)",
    "empty_turn": "whether Gemini ended a turn owed to the user with nothing in it (the watchdog acts)",
    "silent_answer": "whether the answer under way is near-silent audio (the watchdog replaces it)",
}
_NUMBERS = ("switch_margin_s", "switch_margin_fraction", "queue_audio_ms", "handle_ttl_s", "recoveries",
            "handle_wait_s")
_CODE_LISTS = ("never_recover", "fresh_after")
_RATE = re.compile(r"rate=(\d+)")


@dataclass(frozen=True)
class Question:
    name: str
    expression: Expression
    keys: frozenset[str]  # the session keys it reads: it is asked again only when one of them changed
    where: str  # file:line


@dataclass(frozen=True)
class ResumptionPolicy:
    questions: Mapping[str, Question]
    switch_margin_s: float = 10
    queue_audio_ms: float = 2000
    handle_ttl_s: float = 6900
    recoveries: int = 1
    never_recover: frozenset[int] = frozenset({1000, 1007, 1008})
    fresh_after: frozenset[int] = frozenset({1011})
    switch_margin_fraction: float = 0.5
    handle_wait_s: float = 2.0
    retry_after_s: tuple[float, ...] = (0.25, 1.0, 2.0)

    # What may start a response in a Gemini message (dotted paths: a message with a truthy value at one of
    # them): a session under a budget sends such a message only while it holds a reservation (session_core.py).
    reserve_before: tuple[tuple[str, ...], ...] = (("clientContent", "turnComplete"), ("realtimeInput", "audio"),
                                                  ("realtimeInput", "text"), ("realtimeInput", "activityEnd"),
                                                  ("toolResponse",))

    def may_start_response(self, message: dict[str, Any]) -> bool:
        for path in self.reserve_before:
            value: Any = message
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            if value:
                return True
        return False

    def switch_lead_s(self, time_left: float) -> float:
        """How long before a goAway's end the switch is due: switch_margin_s, but never more than
        switch_margin_fraction of the time left (a short timeLeft still leaves the turn time to end)."""
        return min(self.switch_margin_s, time_left * self.switch_margin_fraction)

    @classmethod
    def load(cls, root: str | Path | None = None, state: StateSpec | None = None) -> ResumptionPolicy:
        """Load mappings/resumption.yaml; with `state`, every session key a question reads must be declared."""
        path = Path(root or MAPPINGS_DIR) / "resumption.yaml"
        doc = Located(f"{path.parent.name}/{path.name}", path.read_text())
        data = doc.data if isinstance(doc.data, dict) else {}
        asked = data.get("questions")
        if not isinstance(asked, dict):
            raise MappingError(doc.position(()), "questions: expected a mapping of names to expressions")
        problems: list[MappingError] = []
        questions: dict[str, Question] = {}
        for name, why in QUESTIONS.items():
            if name not in asked:
                problems.append(MappingError(doc.position(("questions",)), f"questions.{name} is missing: livegate's "
                                             f"session core asks it ({why})"))
        for name, source in asked.items():
            where = doc.position(("questions", name))
            if name not in QUESTIONS:
                problems.append(MappingError(where, f"questions.{name}: the session core asks no such question "
                                             f"(it asks {', '.join(QUESTIONS)})"))
                continue
            if not isinstance(source, str) or not source.startswith("="):
                problems.append(MappingError(where, f"questions.{name}: expected an expression (=...)"))
                continue
            expression = compile_expression(doc, ("questions", name), source)
            keys = frozenset(session_keys(expression.ast))
            for steps in dict.fromkeys(session_paths(expression.ast)):
                wrong = state.misuse(steps, "read") if state is not None else None
                if wrong is not None:
                    problems.append(MappingError(where, f"questions.{name}: {wrong[1]}"))
            questions[name] = Question(name, expression, keys, f"{where.file}:{where.line}")
        if problems:
            first = problems[0]
            raise MappingError(first.position, "\n".join(str(p) for p in problems)[len(str(first.position)) + 2:])
        values: dict[str, Any] = {}
        for key in _NUMBERS:
            if key in data:
                if not isinstance(data[key], int | float) or isinstance(data[key], bool) or data[key] < 0:
                    raise MappingError(doc.position((key,)), f"{key}: expected a number >= 0")
                values[key] = data[key]
        if "retry_after_s" in data:
            delays = data["retry_after_s"]
            if not isinstance(delays, list) or not all(
                    isinstance(d, int | float) and not isinstance(d, bool) and d >= 0 for d in delays):
                raise MappingError(doc.position(("retry_after_s",)), "retry_after_s: expected a list of numbers >= 0")
            values["retry_after_s"] = tuple(float(d) for d in delays)
        for key in _CODE_LISTS:
            if key in data:
                codes = data[key]
                if not isinstance(codes, list) or not all(isinstance(c, int) and 1000 <= c <= 4999 for c in codes):
                    raise MappingError(doc.position((key,)), f"{key}: expected a list of close codes (1000-4999)")
                values[key] = frozenset(codes)
        if "reserve_before" in data:
            paths = data["reserve_before"]
            if not isinstance(paths, list) or not all(isinstance(f, str) and f for f in paths):
                raise MappingError(doc.position(("reserve_before",)), "reserve_before: expected a list of paths "
                                   "in Gemini messages (clientContent.turnComplete, realtimeInput.audio, ...)")
            values["reserve_before"] = tuple(tuple(path.split(".")) for path in paths)
        return cls(questions, **values)


def duration_s(value: Any) -> float | None:
    """A protobuf Duration as JSON (`"50s"`, `"1.5s"`) in seconds; None when absent or malformed."""
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def audio_ms(message: dict[str, Any]) -> float:
    """Milliseconds of PCM16 audio in a realtimeInput.audio message (0 for anything else)."""
    blob = (message.get("realtimeInput") or {}).get("audio")
    if not isinstance(blob, dict):
        return 0.0
    rate = _RATE.search(str(blob.get("mimeType") or ""))
    data = str(blob.get("data") or "")
    n_bytes = base64_size(data)
    return n_bytes / 2 / int(rate.group(1)) * 1000 if rate else 0.0


@dataclass
class InputQueue:
    """Messages for Gemini held while a connection opens, in order. Audio beyond `max_audio_ms` is dropped
    oldest first; everything else (text, items, tool outputs, activity signals) is always kept. A queue that
    does not drop (`drops` false) is `full` instead: the pump then stops reading the client (backpressure)."""

    max_audio_ms: float
    drops: bool = True
    messages: deque[tuple[dict[str, Any], float]] = field(default_factory=deque)
    audio_ms: float = 0.0
    dropped_ms: float = 0.0  # since the last take_dropped()

    def put(self, message: dict[str, Any]) -> None:
        ms = audio_ms(message)
        self.messages.append((message, ms))
        self.audio_ms += ms
        while self.drops and self.audio_ms > self.max_audio_ms:
            oldest = next((i for i, (_, m) in enumerate(self.messages) if m > 0), None)
            if oldest is None:
                break
            _, m = self.messages[oldest]
            del self.messages[oldest]
            self.audio_ms -= m
            self.dropped_ms += m

    @property
    def full(self) -> bool:
        return self.audio_ms >= self.max_audio_ms

    def take_dropped(self) -> float:
        dropped, self.dropped_ms = self.dropped_ms, 0.0
        return dropped

    def drain(self) -> list[dict[str, Any]]:
        out = [m for m, _ in self.messages]
        self.messages.clear()
        self.audio_ms = 0.0
        return out

    def __len__(self) -> int:
        return len(self.messages)
