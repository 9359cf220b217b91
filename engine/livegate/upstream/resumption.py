"""The resumption policy (mappings/resumption.yaml) and the bounded queue of client input held while a
session moves to a new Gemini connection. The switching itself is in engine/livegate/server/realtime.py."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livegate.mapping.errors import MappingError
from livegate.mapping.expressions import Expression, compile_expression, truthy
from livegate.mapping.functions import base64_size
from livegate.mapping.yamlpos import Located
from livegate.paths import MAPPINGS_DIR

_RATE = re.compile(r"rate=(\d+)")
_NUMBERS = ("switch_margin_s", "queue_audio_ms", "handle_ttl_s", "recoveries")


@dataclass(frozen=True)
class ResumptionPolicy:
    turn_boundary: Expression
    switch_margin_s: float = 10
    queue_audio_ms: float = 2000
    handle_ttl_s: float = 6900
    recoveries: int = 1

    @classmethod
    def load(cls, root: str | Path | None = None) -> ResumptionPolicy:
        path = Path(root or MAPPINGS_DIR) / "resumption.yaml"
        doc = Located(f"{path.parent.name}/{path.name}", path.read_text())
        data = doc.data if isinstance(doc.data, dict) else {}
        boundary = data.get("turn_boundary")
        if not isinstance(boundary, str) or not boundary.startswith("="):
            raise MappingError(doc.position(("turn_boundary",)), "turn_boundary: expected an expression (=...)")
        numbers = {}
        for key in _NUMBERS:
            if key in data:
                if not isinstance(data[key], int | float) or data[key] < 0:
                    raise MappingError(doc.position((key,)), f"{key}: expected a number >= 0")
                numbers[key] = data[key]
        return cls(compile_expression(doc, ("turn_boundary",), boundary), **numbers)

    def at_turn_boundary(self, translator: Any) -> bool:
        scope = {"session": translator.session, "config": translator.config, "tables": translator.mappings.tables}
        return truthy(self.turn_boundary(translator.runtime, scope))


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
    """Messages for Gemini held during a switch, in order. Audio beyond `max_audio_ms` is dropped
    oldest first; everything else (text, items, tool outputs, activity signals) is always kept."""

    max_audio_ms: float
    messages: deque[tuple[dict[str, Any], float]] = field(default_factory=deque)
    audio_ms: float = 0.0
    dropped_ms: float = 0.0  # since the last take_dropped()

    def put(self, message: dict[str, Any]) -> None:
        ms = audio_ms(message)
        self.messages.append((message, ms))
        self.audio_ms += ms
        while self.audio_ms > self.max_audio_ms:
            oldest = next((i for i, (_, m) in enumerate(self.messages) if m > 0), None)
            if oldest is None:
                break
            _, m = self.messages[oldest]
            del self.messages[oldest]
            self.audio_ms -= m
            self.dropped_ms += m

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


