"""The usage ledger: Gemini's `usageMetadata` read once, into per-modality counts that `response.done`, the
spend store, the passthroughs' log lines and the session log all read.

The one reading (`TokenUsage.from_metadata`) handles the traps of Gemini's reports (PROTOCOLS.md §5.2, §11):
- both spellings of the output side: AI Studio `responseTokenCount`/`responseTokensDetails`, Vertex
  `candidatesTokenCount`/`candidatesTokensDetails`;
- `thoughtsTokenCount` sits outside `totalTokenCount` on 3.8: it is counted as output (`output_thinking`);
- `toolUsePromptTokenCount` is input text;
- modality details that do not add up to the count: the rest is kept as a gap (`input_gap`, `output_gap`),
  never dropped;
- **counts are clamped**: a count is a non-negative integer (int64 fields may arrive as JSON strings);
  anything else, a negative number included, reads as 0. A negative count cannot be a credit on a bill,
  and `response.done` must never report less usage than livegate bills. So `response.done` reports what is
  billed: input = prompt + tool-use prompt, output = response + thinking, total = input + output.

`UsageLedger` keeps a session's reports turn by turn: within a turn reports are running totals, so the
latest report of a turn is the turn; a report replaces the previous one until the next model output
(`modelTurn`, `outputTranscription` or `toolCall`) begins, whether it rides with `turnComplete` or follows
it. For models whose reports are running totals of the whole session (prices.yaml `usage: cumulative`) the
latest report is the session's usage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

_OUTPUT_COUNT = ("responseTokenCount", "candidatesTokenCount")
_OUTPUT_DETAILS = ("responseTokensDetails", "candidatesTokensDetails")
_INPUT_MODALITIES = {"TEXT": "input_text", "AUDIO": "input_audio", "IMAGE": "input_image", "VIDEO": "input_video",
                     "DOCUMENT": "input_text"}
_OUTPUT_MODALITIES = {"TEXT": "output_text", "AUDIO": "output_audio", "IMAGE": "output_text"}
_BILLED_INPUT = ("input_gap", "input_text", "input_audio", "input_image", "input_video")  # cached taken in this order
_LOG_NAMES = {"input_text": "TEXT", "input_audio": "AUDIO", "input_image": "IMAGE", "input_video": "VIDEO",
              "output_text": "TEXT", "output_audio": "AUDIO"}


def count(value: Any) -> int:
    """A token count: a non-negative integer, from a number or a numeric string; anything else is 0."""
    if type(value) is int:
        return value if value > 0 else 0
    if isinstance(value, bool):
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return number if number > 0 else 0


@dataclass(slots=True)
class TokenUsage:
    """Usage by modality, as reported (one report, or the sum of several)."""

    input_text: int = 0  # prompt tokens by modality, cached ones included (DOCUMENT and tool-use prompts: text)
    input_audio: int = 0
    input_image: int = 0
    input_video: int = 0
    input_gap: int = 0  # prompt tokens the modality details do not cover
    input_cached: int = 0  # of the prompt, served from the context cache
    output_text: int = 0  # IMAGE output counts as text
    output_audio: int = 0
    output_thinking: int = 0
    output_gap: int = 0  # response tokens the modality details do not cover
    # the modalities the reports named (the gaps are priced at the highest of their prices)
    seen_input: frozenset[str] = field(default_factory=frozenset)
    seen_output: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_metadata(cls, usage: dict[str, Any]) -> TokenUsage:
        """The one reading of a Gemini usageMetadata object."""
        out = cls()
        tool_use = count(usage.get("toolUsePromptTokenCount"))
        prompt = count(usage.get("promptTokenCount")) + tool_use
        by_input = _details(usage.get("promptTokensDetails"), _INPUT_MODALITIES)
        for name, tokens in by_input.items():
            setattr(out, name, getattr(out, name) + tokens)
        out.input_text += tool_use
        covered = out.input_text + out.input_audio + out.input_image + out.input_video
        out.input_gap = max(prompt - covered, 0)
        out.input_cached = min(count(usage.get("cachedContentTokenCount")), out.input_tokens)
        completion = count(next((usage[k] for k in _OUTPUT_COUNT if k in usage), 0))
        by_output = _details(next((usage[k] for k in _OUTPUT_DETAILS if k in usage), None), _OUTPUT_MODALITIES)
        for name, tokens in by_output.items():
            setattr(out, name, getattr(out, name) + tokens)
        out.output_gap = max(completion - out.output_text - out.output_audio, 0)
        out.output_thinking = count(usage.get("thoughtsTokenCount"))
        out.seen_input, out.seen_output = frozenset(by_input), frozenset(by_output)
        return out

    @property
    def input_tokens(self) -> int:
        return self.input_text + self.input_audio + self.input_image + self.input_video + self.input_gap

    @property
    def output_tokens(self) -> int:
        return self.output_text + self.output_audio + self.output_thinking + self.output_gap

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: TokenUsage) -> None:
        for f in fields(self):
            if f.name.startswith("seen_"):
                setattr(self, f.name, getattr(self, f.name) | getattr(other, f.name))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> TokenUsage:
        out = TokenUsage()
        out.add(self)
        return out

    def billed(self) -> dict[str, int]:
        """The buckets prices apply to: cached tokens move out of the modality buckets (the gap first, then
        text, audio, image, video) into `input_cached`. These are the spend row's token columns."""
        buckets = {name: getattr(self, name) for name in _BILLED_INPUT}
        remaining = self.input_cached
        for name in _BILLED_INPUT:
            take = min(buckets[name], remaining)
            buckets[name] -= take
            remaining -= take
        buckets["input_cached"] = self.input_cached - remaining
        for name in ("output_text", "output_audio", "output_thinking", "output_gap"):
            buckets[name] = getattr(self, name)
        return buckets

    def counts(self) -> dict[str, Any]:
        """The counts the mapping rules read (`event.usage`; shapes/usage.yaml makes OpenAI's usage of them)."""
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "total_tokens": self.total_tokens,
                "input": {"text": self.input_text, "audio": self.input_audio, "image": self.input_image,
                          "video": self.input_video, "cached": self.input_cached},
                "output": {"text": self.output_text, "audio": self.output_audio, "thinking": self.output_thinking}}

    def summary(self) -> dict[str, Any]:
        """For log lines: totals, and tokens by modality (Gemini's names) where there were any."""
        out: dict[str, Any] = {
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "total_tokens": self.total_tokens,
            "input_by_modality": {_LOG_NAMES[n]: getattr(self, n) for n in
                                  ("input_text", "input_audio", "input_image", "input_video") if getattr(self, n)},
            "output_by_modality": {_LOG_NAMES[n]: getattr(self, n) for n in ("output_text", "output_audio")
                                   if getattr(self, n)},
        }
        if self.input_cached:
            out["cached_tokens"] = self.input_cached
        if self.output_thinking:
            out["thoughts_tokens"] = self.output_thinking
        return out


class UsageLedger:
    """A session's usage, turn by turn (see the module docstring). `on_change` is called whenever the usage
    known so far changed (the accounting prices it as it comes)."""

    def __init__(self, cumulative: bool = False, on_change: Callable[[], None] | None = None) -> None:
        self.total = TokenUsage()
        self.pending: TokenUsage | None = None  # the latest report of the turn in progress
        self.cumulative = cumulative
        self.on_change = on_change
        self.turns = 0  # turns whose usage was reported
        self.beside = TokenUsage()  # calls beside the live turns (out-of-band responses), each counted once

    def model_output(self) -> None:
        """The next model output began: the previous turn's latest report is final."""
        if self.pending is not None:
            self.commit()

    def report(self, usage_metadata: dict[str, Any]) -> TokenUsage:
        """A usage report of the turn in progress (it replaces the previous one); returns its reading."""
        self.pending = TokenUsage.from_metadata(usage_metadata)
        if self.on_change is not None:
            self.on_change()
        return self.pending

    def observe(self, frame: str | bytes) -> None:
        """Read one raw Gemini frame (the passthroughs, which do not parse every frame): only frames that
        mention `usageMetadata` are parsed; the rest cost a substring test or two."""
        if self.pending is not None and (_mentions(frame, '"modelTurn"') or _mentions(frame, '"toolCall"')
                                         or _mentions(frame, '"outputTranscription"')):
            self.commit()
        if not _mentions(frame, '"usageMetadata"'):
            return
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return
        usage = message.get("usageMetadata") if isinstance(message, dict) else None
        if isinstance(usage, dict):
            self.report(usage)

    def separate(self, usage_metadata: dict[str, Any]) -> TokenUsage:
        """A whole report of a call beside the live turns (an out-of-band response's generateContent): counted
        at once, leaving the turn in progress alone; returns its reading."""
        usage = TokenUsage.from_metadata(usage_metadata)
        self.beside.add(usage)
        self.total.add(usage)
        if self.on_change is not None:
            self.on_change()
        return usage

    def commit(self) -> None:
        if self.pending is not None:
            self.turns += 1
            if self.cumulative:  # the live session's running total, plus the calls beside it
                self.total = self.pending.copy()
                self.total.add(self.beside)
            else:
                self.total.add(self.pending)
            self.pending = None

    def current(self) -> TokenUsage:
        """Committed turns plus the pending report: what the session has used so far."""
        if self.cumulative:
            if self.pending is None:
                return self.total.copy()
            out = self.pending.copy()
            out.add(self.beside)
            return out
        out = self.total.copy()
        if self.pending is not None:
            out.add(self.pending)
        return out


def _mentions(frame: str | bytes, needle: str) -> bool:
    return (needle.encode() in frame) if isinstance(frame, bytes) else (needle in frame)


def _details(details: Any, names: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and item.get("modality") in names:
            name = names[item["modality"]]
            out[name] = out.get(name, 0) + count(item.get("tokenCount"))
    return out
