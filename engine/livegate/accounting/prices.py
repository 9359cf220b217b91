"""The price table: USD per token by modality, from mappings/prices.yaml and `model_info` overrides."""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from livegate.paths import MAPPINGS_DIR

log = logging.getLogger("livegate.accounting")

PER_MILLION = 1_000_000

# LiteLLM's model_info keys (USD per token) -> our fields.
MODEL_INFO_KEYS = {
    "input_cost_per_token": "input_text",
    "input_cost_per_audio_token": "input_audio",
    "input_cost_per_image_token": "input_image",
    "input_cost_per_video_token": "input_video",
    "cache_read_input_token_cost": "input_cached",
    "output_cost_per_token": "output_text",
    "output_cost_per_audio_token": "output_audio",
    "output_cost_per_reasoning_token": "output_thinking",
}


@dataclass(frozen=True)
class Price:
    """USD per token. None = not listed (the fallbacks in `resolved` apply)."""

    input_text: float | None = None
    input_audio: float | None = None
    input_image: float | None = None
    input_video: float | None = None
    input_cached: float | None = None
    output_text: float | None = None
    output_audio: float | None = None
    output_thinking: float | None = None
    source: str = ""
    cumulative_usage: bool = False  # the model's usage reports are session totals, not per turn

    def resolved(self) -> Price:
        """Fill the documented fallbacks: images and video at the audio price, cached input at the text
        price, thinking at the output text price."""
        return replace(
            self,
            input_image=_first(self.input_image, self.input_audio),
            input_video=_first(self.input_video, self.input_audio),
            input_cached=_first(self.input_cached, self.input_text),
            output_thinking=_first(self.output_thinking, self.output_text),
        )

    def complete(self) -> bool:
        return all(getattr(self, f.name) is not None for f in fields(self) if f.name not in _NOT_PRICES)


_NOT_PRICES = ("source", "cumulative_usage")


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


@dataclass(frozen=True)
class PriceRow:
    patterns: tuple[str, ...]
    price: Price


class PriceTable:
    def __init__(self, rows: list[PriceRow]) -> None:
        self.rows = rows

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        path = Path(path) if path else MAPPINGS_DIR / "prices.yaml"
        data = yaml.safe_load(path.read_text()) or {}
        rows = []
        for i, entry in enumerate(data.get("models") or []):
            where = f"{path.name}: models[{i}]"
            patterns = entry.get("match")
            if isinstance(patterns, str):
                patterns = [patterns]
            if not patterns or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"{where}.match: expected a model id or a list of them")
            if not entry.get("date") or not entry.get("source"):
                raise ValueError(f"{where}: every price row needs a `date` and a `source`")
            per_token = {}
            for f in fields(Price):
                if f.name in _NOT_PRICES or entry.get(f.name) is None:
                    continue
                value = entry[f.name]
                if not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{where}.{f.name}: expected a non-negative number (USD per 1M tokens)")
                per_token[f.name] = float(value) / PER_MILLION
            usage = entry.get("usage", "per_turn")
            if usage not in ("per_turn", "cumulative"):
                raise ValueError(f"{where}.usage: expected per_turn or cumulative")
            rows.append(PriceRow(tuple(patterns), Price(**per_token, source=f"{entry['date']} {entry['source']}",
                                                        cumulative_usage=usage == "cumulative")))
        return cls(rows)

    def lookup(self, model_id: str | None, model_info: dict[str, Any] | None = None) -> Price | None:
        """The resolved price of an upstream model id, with `model_info` overrides; None = unknown."""
        short = (model_id or "").rsplit("/", 1)[-1]
        base = next((row.price for row in self.rows if any(fnmatch.fnmatchcase(short, p) for p in row.patterns)),
                    None)
        overrides: dict[str, Any] = {ours: float(model_info[theirs]) for theirs, ours in MODEL_INFO_KEYS.items()
                     if model_info and isinstance(model_info.get(theirs), int | float)}
        if base is None and not overrides:
            return None
        price = replace(base or Price(source="model_info"), **overrides).resolved()
        if price.input_text is None or price.output_text is None:
            return None  # an override listing only some fields of an unknown model is not a price
        return price
