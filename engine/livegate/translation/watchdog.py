"""The watchdog for Gemini's silent failures: its settings, and the ladder of recoveries for one question.

Gemini fails in ways that are no error on the wire (PROTOCOLS §12): no answer after the user stopped
talking, a turn that ends with nothing in it (or runs of RESPONSE_REJECTED), an answer whose audio is
near-silent. The facts come from the mappings (resumption.yaml's questions `awaiting_output`,
`empty_turn`, `silent_answer`); the session core (session_core.py) keeps the clock and asks this ladder
what to do about each failure of the question in flight:

    stall (no output within stall_timeout_ms)   ask again on the same connection, then re-seed, then give up
    stall mid-answer (upstream_stall_timeout_s) re-seed (the cut answer fails), then give up
    empty turn (or RESPONSE_REJECTED)           ask again, until empty_turns_before_reseed in a row; then
                                                re-seed, then give up
    near-silent answer                          re-seed (a fresh session; the failure sticks to a session),
                                                then give up

"Ask again" is lifecycle/watchdog.yaml's reask (the client sees nothing), "re-seed" a move to a fresh
Gemini session with the question asked again (lifecycle/upstream_resume.yaml; a near-silent response ends
`failed` with code silent_audio first), "give up" lifecycle/watchdog.yaml's give_up (the turn ends as it is,
with one informational `error`). The ladder starts again when the question is over (a turn boundary); the
run of empty turns only when output comes. No decision here touches a socket or a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WatchdogSettings:
    """livegate_settings (schemas/config.schema.json); 0 turns a detector off."""

    stall_timeout_ms: float = 8000.0  # no model output this long after the user's turn ended
    empty_turns_before_reseed: int = 3  # empty or rejected turns in a row before a fresh session
    silent_audio_ms: float = 1000.0  # how much of an answer's audio is heard before it is judged
    silent_audio_level: float = 100.0  # mean absolute PCM16 sample value under which it is near-silent

    @property
    def stall_timeout_s(self) -> float:
        return self.stall_timeout_ms / 1000

    def context(self) -> dict[str, Any]:
        """What the mappings read as `config.watchdog`: a detector turned off (0) reads as null, since 0 is
        true in the mapping language (JMESPath)."""
        return {"empty_turns": self.empty_turns_before_reseed or None, "silent_audio_ms": self.silent_audio_ms or None,
                "silent_audio_level": self.silent_audio_level}


class Action(enum.Enum):
    REASK = "reask"
    RESEED = "reseed"
    GIVE_UP = "give_up"


class Failure(enum.Enum):
    STALL = "stall"
    EMPTY_TURN = "empty_turn"
    SILENT_AUDIO = "silent_audio"


# Every kind of recovery the session core counts (livegate_recoveries_total{kind}) and logs: a bounded set.
RECOVERY_KINDS = frozenset({
    "resumed",  # a lost connection: the session resumed on a new one with the handle
    "reseeded",  # a lost connection (a 1011, or no usable handle): a fresh session re-seeded
    "retried",  # a new connection that could not be opened was tried again after a delay
    "reconfigured_fresh",  # a session.update with no usable handle applied through a fresh session
    "tool_output_held",  # a goAway's deadline passed while a tool call waited: the switch waited for its output
    "stall_reask", "stall_reseed", "stall_gave_up",
    "empty_turn_reask", "empty_turn_reseed", "empty_turn_gave_up",
    "silent_audio_reseed", "silent_audio_gave_up",
})


class Ladder:
    """The recoveries tried for the question in flight, and the run of empty turns."""

    def __init__(self, settings: WatchdogSettings) -> None:
        self.settings = settings
        self.reasks = 0  # asked again on the same connection for this question
        self.reseeded = False  # this question was already moved to a fresh session
        self.empty_run = 0  # empty or rejected turns in a row (across questions, until output comes)

    def failed(self, failure: Failure, *, under_way: bool = False) -> Action:
        """What to do about a failure of the question in flight; `under_way`: its answer had begun (asking
        again on the same connection would start a second one)."""
        if failure is Failure.EMPTY_TURN:
            self.empty_run += 1
        if self.reseeded:
            return Action.GIVE_UP
        if failure is Failure.SILENT_AUDIO or under_way:
            return Action.RESEED
        if failure is Failure.EMPTY_TURN and self.empty_run < self.settings.empty_turns_before_reseed:
            self.reasks += 1
            return Action.REASK
        if failure is Failure.STALL and self.reasks == 0:
            self.reasks += 1
            return Action.REASK
        return Action.RESEED

    def reseeding(self) -> None:
        self.reseeded = True

    def output_came(self) -> None:
        self.empty_run = 0

    def question_over(self) -> None:
        self.reasks = 0
        self.reseeded = False
