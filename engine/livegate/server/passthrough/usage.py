"""Token usage read from Gemini `usageMetadata`, on the way through, for the session log line.

Both spellings of the output side are read: AI Studio's `responseTokenCount`/`responseTokensDetails`
and Vertex's `candidatesTokenCount`/`candidatesTokensDetails` (docs/protocol-notes.md §4).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

_OUTPUT_COUNT = ("responseTokenCount", "candidatesTokenCount")
_OUTPUT_DETAILS = ("responseTokensDetails", "candidatesTokensDetails")


class UsageTotals:
    """Sums of usage reports: totals and tokens by modality (TEXT, AUDIO, IMAGE, VIDEO, DOCUMENT)."""

    def __init__(self) -> None:
        self.input_tokens = self.output_tokens = self.total_tokens = 0
        self.cached_tokens = self.thoughts_tokens = 0
        self.input_by_modality: Counter[str] = Counter()
        self.output_by_modality: Counter[str] = Counter()

    def add(self, usage: dict[str, Any]) -> None:
        self.input_tokens += _count(usage.get("promptTokenCount"))
        self.output_tokens += _count(next((usage[k] for k in _OUTPUT_COUNT if k in usage), 0))
        self.total_tokens += _count(usage.get("totalTokenCount"))
        self.cached_tokens += _count(usage.get("cachedContentTokenCount"))
        self.thoughts_tokens += _count(usage.get("thoughtsTokenCount"))
        _add_details(self.input_by_modality, usage.get("promptTokensDetails"))
        _add_details(self.output_by_modality, next((usage[k] for k in _OUTPUT_DETAILS if k in usage), None))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "input_by_modality": dict(self.input_by_modality),
            "output_by_modality": dict(self.output_by_modality),
        }
        if self.cached_tokens:
            out["cached_tokens"] = self.cached_tokens
        if self.thoughts_tokens:
            out["thoughts_tokens"] = self.thoughts_tokens
        return out


class LiveUsageMeter:
    """Usage of a Gemini Live session from its server frames.

    The latest report of a turn is the turn's usage (as in the /v1/realtime translator): a report
    replaces the previous one until the next turn's model output (`modelTurn` or `toolCall`) begins,
    whether usage rides with `turnComplete` or follows it. Only frames that mention `usageMetadata`
    are parsed; the rest get a substring test, so audio frames cost no JSON decoding.
    """

    def __init__(self) -> None:
        self.totals = UsageTotals()
        self._pending: dict[str, Any] | None = None

    def observe(self, frame: str | bytes) -> None:
        if self._pending is not None and (_mentions(frame, '"modelTurn"') or _mentions(frame, '"toolCall"')):
            self._commit()
        if not _mentions(frame, '"usageMetadata"'):
            return
        try:
            message = json.loads(frame)
        except ValueError:
            return
        usage = message.get("usageMetadata") if isinstance(message, dict) else None
        if isinstance(usage, dict):
            self._pending = usage

    def finish(self) -> UsageTotals:
        self._commit()
        return self.totals

    def _commit(self) -> None:
        if self._pending is not None:
            self.totals.add(self._pending)
            self._pending = None


def last_usage(body: bytes, event_stream: bool) -> dict[str, Any] | None:
    """The last `usageMetadata` of a generateContent / streamGenerateContent response body (a JSON object,
    a JSON array of chunks, or server-sent events). Streamed chunks carry running totals, so the last wins."""
    chunks: list[Any] = []
    try:
        if event_stream:
            for line in body.decode().splitlines():
                if line.startswith("data:") and line[5:].strip():
                    chunks.append(json.loads(line[5:]))
        else:
            parsed = json.loads(body)
            chunks = parsed if isinstance(parsed, list) else [parsed]
    except ValueError:
        return None
    for chunk in reversed(chunks):
        usage = chunk.get("usageMetadata") if isinstance(chunk, dict) else None
        if isinstance(usage, dict):
            return usage
    return None


def _mentions(frame: str | bytes, needle: str) -> bool:
    return (needle.encode() in frame) if isinstance(frame, bytes) else (needle in frame)


def _count(value: Any) -> int:
    try:
        return int(value or 0)  # int64 fields may arrive as JSON strings
    except (TypeError, ValueError):
        return 0


def _add_details(counter: Counter[str], details: Any) -> None:
    for item in details if isinstance(details, list) else ():
        if isinstance(item, dict) and isinstance(item.get("modality"), str):
            counter[item["modality"]] += _count(item.get("tokenCount"))
