"""One usage ledger: a Gemini usage report is read once (livegate.translation.usage), and `response.done`,
the spend store, the Live passthrough's and the REST passthrough's log lines and the session log all count
the same tokens, including the reports that used to make them disagree (negative or string counts,
thinking outside the total, tool-use prompts, details that do not cover the count, cached tokens)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from livegate.accounting.cost import cost_of
from livegate.accounting.prices import PriceTable
from livegate.mapping import load_mappings
from livegate.translation.translator import Translator
from livegate.translation.usage import TokenUsage, UsageLedger, count

MAPPINGS = load_mappings()
M = 1_000_000

# Each: a report, then what every reader must count (input, output, total).
REPORTS: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    "consistent": ({"promptTokenCount": 12, "responseTokenCount": 30, "totalTokenCount": 42,
                    "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 12}],
                    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 30}]}, (12, 30, 42)),
    # 3.8: thinking outside totalTokenCount, a tool-use prompt, details short of the count, cached tokens,
    # int64 as a string. response.done used to say 120 / 40 / 160 while the bill counted 130 / 65 / 195.
    "inconsistent": ({"promptTokenCount": "120", "responseTokenCount": 40, "totalTokenCount": 160,
                      "thoughtsTokenCount": 25, "toolUsePromptTokenCount": 10, "cachedContentTokenCount": 30,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 20},
                                              {"modality": "AUDIO", "tokenCount": 80}],
                      "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 40}]}, (130, 65, 195)),
    # Negative counts: the bill clamped them, the passthrough log and response.done did not (-5 in).
    "negative": ({"promptTokenCount": -5, "candidatesTokenCount": 7, "totalTokenCount": 2,
                  "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": -3}]}, (0, 7, 7)),
}


@pytest.mark.parametrize("value", [-1, -0.5, "-7", True, None, "x", [], {}])
def test_a_count_that_is_not_a_non_negative_integer_reads_as_zero(value: Any) -> None:
    assert count(value) == 0


def test_counts_as_strings_are_read() -> None:
    assert (count("1100"), count(12), count(12.0)) == (1100, 12, 12)


def _response_done(report: dict[str, Any]) -> dict[str, Any]:
    translator = Translator(MAPPINGS, deterministic=True, context={"model": "gpt-realtime",
                                                                   "setup_model": "models/m", "backend": "aistudio"})
    translator.start()
    translator.from_client({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
    translator.from_client({"type": "response.create"})
    translator.from_upstream({"serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}}})
    out = translator.from_upstream({"serverContent": {"turnComplete": True}, "usageMetadata": report})
    done = next(m for m in out.client if m["type"] == "response.done")
    current = translator.usage.current()
    assert (current.input_tokens, current.output_tokens) == (done["response"]["usage"]["input_tokens"],
                                                             done["response"]["usage"]["output_tokens"])
    return done["response"]["usage"]


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_every_reader_counts_the_same_tokens(name: str) -> None:
    report, expected = REPORTS[name]
    usage = _response_done(report)
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == expected, "response.done"
    ledger = UsageLedger()  # the Live passthrough: raw frames
    ledger.observe(json.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": report}))
    live = ledger.current().summary()
    assert (live["input_tokens"], live["output_tokens"], live["total_tokens"]) == expected, "Live passthrough log"
    rest = TokenUsage.from_metadata(report).summary()  # the REST passthrough: the body's last report
    assert (rest["input_tokens"], rest["output_tokens"], rest["total_tokens"]) == expected, "REST passthrough log"
    billed = TokenUsage.from_metadata(report).billed()  # the spend row's columns
    assert sum(v for k, v in billed.items() if k.startswith("input_")) == expected[0], "spend row, input"
    assert sum(v for k, v in billed.items() if k.startswith("output_")) == expected[1], "spend row, output"
    assert all(v >= 0 for v in billed.values())


def test_response_done_details_are_the_reported_modalities() -> None:
    usage = _response_done(REPORTS["inconsistent"][0])
    assert usage["input_token_details"] == {"text_tokens": 30, "audio_tokens": 80, "image_tokens": 0,
                                            "cached_tokens": 30}
    assert usage["output_token_details"] == {"text_tokens": 0, "audio_tokens": 40}


def test_the_bill_prices_what_response_done_reports() -> None:
    price = PriceTable.load().lookup("gemini-3.8-live")
    usage = TokenUsage.from_metadata(REPORTS["inconsistent"][0])
    cost = cost_of(usage, price)
    assert cost is not None
    # cached tokens come out of the gap first (20), then text (10); the rest at their modality's price
    assert cost.input == pytest.approx((20 * 0.75 + 80 * 3.0 + 30 * price.input_cached * M) / M)
    assert cost.output == pytest.approx((40 * 12.0 + 25 * 4.5) / M)


def test_the_ledger_tells_accounting_when_usage_changes() -> None:
    changes: list[int] = []
    ledger = UsageLedger()
    ledger.on_change = lambda: changes.append(ledger.current().total_tokens)
    translator = Translator(MAPPINGS, ledger=ledger, context={"model": "m", "setup_model": "models/m",
                                                              "backend": "aistudio"})
    translator.start()
    translator.from_upstream({"usageMetadata": {"promptTokenCount": 2, "responseTokenCount": 3}})
    translator.from_upstream({"usageMetadata": {"promptTokenCount": 4, "responseTokenCount": 5}})  # same turn
    translator.from_upstream({"serverContent": {"modelTurn": {"parts": [{"text": "next"}]}}})
    translator.from_upstream({"usageMetadata": {"promptTokenCount": 1, "responseTokenCount": 1}})
    assert changes == [5, 9, 11], "the latest report of a turn replaces the previous one"
    assert ledger.turns == 1 and translator.usage is ledger


@pytest.mark.parametrize("cumulative", [False, True])
def test_a_call_beside_the_live_turns_is_counted_once_and_leaves_the_turn_alone(cumulative: bool) -> None:
    """An out-of-band response's generateContent usage is its own: added at once, kept when the live session's
    reports (running totals, or session-cumulative ones) replace each other."""
    ledger = UsageLedger(cumulative=cumulative)
    ledger.report({"promptTokenCount": 10, "responseTokenCount": 5})
    side = ledger.separate({"promptTokenCount": 7, "candidatesTokenCount": 3})
    assert (side.input_tokens, side.output_tokens) == (7, 3)
    assert ledger.current().total_tokens == 25
    ledger.report({"promptTokenCount": 12, "responseTokenCount": 6})  # the live turn's latest report
    assert ledger.current().total_tokens == 28
    ledger.model_output()
    assert ledger.total.total_tokens == 28
