"""What a session tells whoever watches it: the metrics, the tracing spans, the transcript.

The translator and the session core call these in line, as things happen, with no I/O of their own; an
observer must return at once (count, record, start or end a span). The base class ignores everything, so an
observer overrides only what it watches.
"""

from __future__ import annotations

from typing import Any

import orjson

# A message to the client: a dict, or JSON text a wire template wrote (mapping/wire.py), which always starts
# `{"event_id":...,"type":"...",` so its type is read without parsing it.
ClientMessage = dict[str, Any] | str


def message_type(message: ClientMessage) -> str | None:
    if type(message) is dict:
        return message.get("type")
    start = message.find('"type":"') + 8  # type: ignore[union-attr]
    return message[start:message.index('"', start)]  # type: ignore[index,union-attr]


def message_dict(message: ClientMessage) -> dict[str, Any]:
    """The message as a dict (JSON text parsed: only for the few events an observer reads inside)."""
    return message if type(message) is dict else orjson.loads(message)  # type: ignore[arg-type]


class SessionObserver:
    def lifecycle_violation(self, before: str, sources: tuple[str, ...], after: str) -> None:
        """An input moved the turn/response state along a transition mappings/state.yaml does not list."""

    def upstream_opening(self, link: int, mode: str) -> None:
        """A Gemini connection is being opened: mode "first", "handle" (resumed) or "fresh" (re-seeded)."""

    def upstream_opened(self, link: int, mode: str) -> None:
        """That connection answered its setup and now carries the session."""

    def upstream_failed(self, link: int, mode: str, kind: str) -> None:
        """That connection could not be opened (kind: see UpstreamFailure)."""

    def upstream_lost(self, link: int, code: int, recovering: bool) -> None:
        """The connection carrying the session closed (code); `recovering`: the session moves to a new one."""

    def switch_started(self, mode: str, cut: bool, why: str) -> None:
        """The session is moving to a new connection (why: go_away, reconfigure, deadline, recovery, or the
        watchdog's stall, empty_turn, silent_audio)."""

    def recovery(self, kind: str) -> None:
        """The session recovered from a fault of Gemini's, or gave up on one (kind: watchdog.RECOVERY_KINDS)."""

    def turn_boundary(self) -> None:
        """The session reached a turn boundary (mappings/resumption.yaml): switching now cuts nothing, and its
        state is whole (a place to checkpoint it)."""

    def session_closing(self, code: int, reason: str) -> None:
        """The session core asked for the client's connection to close."""

    def guardrail_decided(self, stage: str, decision: dict[str, Any]) -> None:
        """The guardrails decided on an input held for them (decision: verdict, name, refusal...)."""

    def client_event(self, event: dict[str, Any]) -> None:
        """A client event was validated (audio appends included: return at once)."""

    def client_messages(self, messages: list[ClientMessage]) -> None:
        """Events went to the client, in its dialect (audio deltas included: return at once)."""


class Observers(SessionObserver):
    """Several observers of one session, told in order (the accounting grant, the tracer, the transcript)."""

    def __init__(self, *observers: SessionObserver) -> None:
        self.observers = observers

    def lifecycle_violation(self, before: str, sources: tuple[str, ...], after: str) -> None:
        for o in self.observers:
            o.lifecycle_violation(before, sources, after)

    def upstream_opening(self, link: int, mode: str) -> None:
        for o in self.observers:
            o.upstream_opening(link, mode)

    def upstream_opened(self, link: int, mode: str) -> None:
        for o in self.observers:
            o.upstream_opened(link, mode)

    def upstream_failed(self, link: int, mode: str, kind: str) -> None:
        for o in self.observers:
            o.upstream_failed(link, mode, kind)

    def upstream_lost(self, link: int, code: int, recovering: bool) -> None:
        for o in self.observers:
            o.upstream_lost(link, code, recovering)

    def switch_started(self, mode: str, cut: bool, why: str) -> None:
        for o in self.observers:
            o.switch_started(mode, cut, why)

    def recovery(self, kind: str) -> None:
        for o in self.observers:
            o.recovery(kind)

    def turn_boundary(self) -> None:
        for o in self.observers:
            o.turn_boundary()

    def session_closing(self, code: int, reason: str) -> None:
        for o in self.observers:
            o.session_closing(code, reason)

    def guardrail_decided(self, stage: str, decision: dict[str, Any]) -> None:
        for o in self.observers:
            o.guardrail_decided(stage, decision)

    def client_event(self, event: dict[str, Any]) -> None:
        for o in self.observers:
            o.client_event(event)

    def client_messages(self, messages: list[ClientMessage]) -> None:
        for o in self.observers:
            o.client_messages(messages)
