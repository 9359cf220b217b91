"""Tokens by modality -> USD. The tokens are the usage ledger's (livegate.translation.usage), which reads
Gemini's usageMetadata once for `response.done`, the spend store and the passthroughs alike.

Pricing rules: each modality bucket at its price; cached prompt tokens at the cached price (taken out of the
buckets by `TokenUsage.billed`); thinking at its own price; a gap (tokens the report's modality details do not
cover) at the highest price among the modalities the report names, text when it names none.
"""

from __future__ import annotations

from dataclasses import dataclass

from livegate.accounting.prices import Price
from livegate.translation.usage import TokenUsage

__all__ = ["Cost", "TokenUsage", "cost_of"]


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
    billed = usage.billed()
    parts: dict[str, float] = {"input": 0.0, "output": 0.0}
    for name in ("input_text", "input_audio", "input_image", "input_video", "input_cached",
                 "output_text", "output_audio", "output_thinking"):
        tokens = billed[name]
        if not tokens:
            continue
        rate = getattr(price, name)
        if rate is None:
            return None
        parts[name.split("_")[0]] += tokens * rate
    for side, seen in (("input", usage.seen_input), ("output", usage.seen_output)):
        gap = billed[f"{side}_gap"]
        if gap:
            rates = [getattr(price, name) for name in seen] or [getattr(price, f"{side}_text")]
            if any(r is None for r in rates):
                return None
            parts[side] += gap * max(rates)
    return Cost(parts["input"], parts["output"])
