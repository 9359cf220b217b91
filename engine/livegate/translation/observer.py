"""What a session tells whoever watches it: metrics today, tracing spans (issue 22) tomorrow.

The translator and the session core call these in line, as things happen, with no I/O of their own; an
observer must return at once (count, record, start or end a span). The base class ignores everything, so an
observer overrides only what it watches.
"""

from __future__ import annotations


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
