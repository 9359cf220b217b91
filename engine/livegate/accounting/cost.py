"""usageMetadata -> tokens by modality -> USD.

Gemini's usage reports have traps, handled here (PROTOCOLS.md §5.2, §11):
- both spellings of the output side: AI Studio `responseTokenCount`/`responseTokensDetails`, Vertex
  `candidatesTokenCount`/`candidatesTokensDetails`;
- within a turn reports are running totals, so the latest report of a turn is the turn (TurnUsageMeter);
  usage may follow `turnComplete`, and belongs to the turn before the next model output;
- `thoughtsTokenCount` is outside `totalTokenCount`: it is counted and billed on its own (output_thinking);
- modality details that do not add up to the count: the gap is kept (`input_gap`, `output_gap`) and billed at
  the highest price among the modalities the report names (text when it names none), never dropped;
- `toolUsePromptTokenCount` is input text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from livegate.accounting.prices import Price

_OUTPUT_COUNT = ("responseTokenCount", "candidatesTokenCount")
_OUTPUT_DETAILS = ("responseTokensDetails", "candidatesTokensDetails")
_INPUT_MODALITIES = {"TEXT": "input_text", "AUDIO": "input_audio", "IMAGE": "input_image", "VIDEO": "input_video",
                     "DOCUMENT": "input_text"}
_OUTPUT_MODALITIES = {"TEXT": "output_text", "AUDIO": "output_audio", "IMAGE": "output_text"}


@dataclass
class TokenUsage:
    input_text: int = 0
    input_audio: int = 0
    input_image: int = 0
    input_video: int = 0
    input_cached: int = 0
    input_gap: int = 0
    output_text: int = 0
    output_audio: int = 0
    output_thinking: int = 0
    output_gap: int = 0
    # which modalities the reports named (for pricing the gaps)
    seen_input: frozenset[str] = frozenset()
    seen_output: frozenset[str] = frozenset()

    @classmethod
    def from_metadata(cls, usage: dict[str, Any]) -> TokenUsage:
        out = cls()
        prompt = _count(usage.get("promptTokenCount")) + _count(usage.get("toolUsePromptTokenCount"))
        out.input_text += _count(usage.get("toolUsePromptTokenCount"))
        by_input = _details(usage.get("promptTokensDetails"), _INPUT_MODALITIES)
        for name, count in by_input.items():
            setattr(out, name, getattr(out, name) + count)
        cached = min(_count(usage.get("cachedContentTokenCount")), prompt)
        out.input_gap = max(prompt - out.input_tokens, 0)
        # cached tokens are part of the prompt: move them out of the modality buckets (text first)
        remaining = cached
        for name in ("input_gap", "input_text", "input_audio", "input_image", "input_video"):
            take = min(getattr(out, name), remaining)
            setattr(out, name, getattr(out, name) - take)
            remaining -= take
        out.input_cached = cached - remaining
        completion = _count(next((usage[k] for k in _OUTPUT_COUNT if k in usage), 0))
        by_output = _details(next((usage[k] for k in _OUTPUT_DETAILS if k in usage), None), _OUTPUT_MODALITIES)
        for name, count in by_output.items():
            setattr(out, name, getattr(out, name) + count)
        out.output_gap = max(completion - out.output_text - out.output_audio, 0)
        out.output_thinking = _count(usage.get("thoughtsTokenCount"))
        out.seen_input, out.seen_output = frozenset(by_input), frozenset(by_output)
        return out

    @property
    def input_tokens(self) -> int:
        return (self.input_text + self.input_audio + self.input_image + self.input_video + self.input_cached
                + self.input_gap)

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

    def columns(self) -> dict[str, int]:
        """Token counts for a spend row (no `seen_` sets)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("seen_")}


@dataclass(frozen=True)
class Cost:
    input: float
    output: float

    @property
    def total(self) -> float:
        return self.input + self.output


def cost_of(usage: TokenUsage, price: Price | None) -> Cost | None:
    """The USD cost of `usage`; None when unknown (no price, or no price for a modality that was used)."""
    if price is None:
        return None
    parts: dict[str, float] = {"input": 0.0, "output": 0.0}
    for name in ("input_text", "input_audio", "input_image", "input_video", "input_cached",
                 "output_text", "output_audio", "output_thinking"):
        tokens = getattr(usage, name)
        if not tokens:
            continue
        rate = getattr(price, name)
        if rate is None:
            return None
        parts[name.split("_")[0]] += tokens * rate
    for side, gap, seen in (("input", usage.input_gap, usage.seen_input),
                            ("output", usage.output_gap, usage.seen_output)):
        if gap:
            rates = [getattr(price, name) for name in seen] or [getattr(price, f"{side}_text")]
            if any(r is None for r in rates):
                return None
            parts[side] += gap * max(rates)
    return Cost(parts["input"], parts["output"])


class TurnUsageMeter:
    """Usage of a Gemini Live session from its raw server frames, turn by turn.

    The latest report of a turn is the turn's usage: a report replaces the previous one until the next
    model output (`modelTurn` or `toolCall`) begins, whether usage rides with `turnComplete` or follows
    it. Only frames mentioning `usageMetadata` are parsed; audio frames cost a substring test.
    """

    def __init__(self, cumulative: bool = False) -> None:
        self.total = TokenUsage()
        self.pending: TokenUsage | None = None
        # For models whose reports are running totals of the whole session (prices.yaml `usage: cumulative`),
        # the latest report is the session's usage: it replaces, never adds.
        self.cumulative = cumulative
        self.turns = 0  # turns whose usage was reported

    def observe(self, frame: str | bytes) -> bool:
        """Read one frame; True when the usage known so far changed."""
        if self.pending is not None and (mentions(frame, '"modelTurn"') or mentions(frame, '"toolCall"')):
            self.commit()
        if not mentions(frame, '"usageMetadata"'):
            return False
        try:
            message = json.loads(frame)
        except ValueError:
            return False
        usage = message.get("usageMetadata") if isinstance(message, dict) else None
        if isinstance(usage, dict):
            self.pending = TokenUsage.from_metadata(usage)
            return True
        return False

    def commit(self) -> None:
        if self.pending is not None:
            self.turns += 1
            if self.cumulative:
                self.total = self.pending
            else:
                self.total.add(self.pending)
            self.pending = None

    def current(self) -> TokenUsage:
        """Committed turns plus the pending report (what the session has used so far)."""
        out = TokenUsage()
        if self.cumulative:
            out.add(self.pending or self.total)
            return out
        out.add(self.total)
        if self.pending is not None:
            out.add(self.pending)
        return out


def mentions(frame: str | bytes, needle: str) -> bool:
    return (needle.encode() in frame) if isinstance(frame, bytes) else (needle in frame)


def _count(value: Any) -> int:
    try:
        return max(int(value or 0), 0)  # int64 fields may arrive as JSON strings
    except (TypeError, ValueError):
        return 0


def _details(details: Any, names: dict[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and item.get("modality") in names:
            name = names[item["modality"]]
            out[name] = out.get(name, 0) + _count(item.get("tokenCount"))
    return out
