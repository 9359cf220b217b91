"""Prices as data and cost by modality: the shipped table, LiteLLM model_info overrides, both backends'
usage spellings, and the usage traps (thinking outside the total, details that do not add up, usage
after turnComplete, running totals within a turn, unknown prices)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from livegate.accounting.cost import TokenUsage, cost_of
from livegate.accounting.prices import PriceTable
from livegate.paths import MAPPINGS_DIR
from livegate.translation.usage import UsageLedger

M = 1_000_000
TABLE = PriceTable.load()


def test_every_price_row_has_a_date_and_a_source() -> None:
    rows = yaml.safe_load((MAPPINGS_DIR / "prices.yaml").read_text())["models"]
    assert len(rows) >= 4
    for row in rows:
        assert row["date"] and row["source"], row["match"]


def test_seeded_gemini_3_8_live_list_prices() -> None:
    price = TABLE.lookup("gemini-3.8-live")
    assert price is not None
    assert (price.input_text * M, price.input_audio * M) == pytest.approx((0.75, 3.00))
    assert (price.output_text * M, price.output_audio * M) == pytest.approx((4.50, 12.00))
    # documented fallbacks: images/video at the audio price, thinking at output text, cached at input text
    assert price.input_image == price.input_audio and price.output_thinking == price.output_text
    assert price.input_cached == price.input_text
    # spellings: a Vertex resource path and the native-audio 2.5 family
    assert TABLE.lookup("projects/p/locations/l/publishers/google/models/gemini-3.8-live") == price
    assert TABLE.lookup("gemini-live-2.5-flash-native-audio").output_audio * M == pytest.approx(12.0)


def test_unknown_model_has_no_price_and_model_info_overrides() -> None:
    assert TABLE.lookup("gemini-9-imaginary") is None
    custom = TABLE.lookup("gemini-9-imaginary", {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                                                 "input_cost_per_audio_token": 5e-6})
    assert custom is not None and custom.input_audio == 5e-6 and custom.output_audio is None
    over = TABLE.lookup("gemini-3.8-live", {"output_cost_per_audio_token": 1e-5})
    assert over.output_audio == 1e-5 and over.input_text * M == pytest.approx(0.75)


def _usage(**fields: object) -> TokenUsage:
    return TokenUsage.from_metadata(fields)


def test_cost_by_modality_on_both_backends() -> None:
    price = TABLE.lookup("gemini-3.8-live")
    ai_studio = _usage(promptTokenCount=1100, responseTokenCount=500, totalTokenCount=1600,
                       promptTokensDetails=[{"modality": "TEXT", "tokenCount": 100},
                                            {"modality": "AUDIO", "tokenCount": 1000}],
                       responseTokensDetails=[{"modality": "AUDIO", "tokenCount": 500}])
    vertex = _usage(promptTokenCount="1100", candidatesTokenCount=500,  # int64 as a string
                    promptTokensDetails=[{"modality": "TEXT", "tokenCount": 100},
                                         {"modality": "AUDIO", "tokenCount": 1000}],
                    candidatesTokensDetails=[{"modality": "AUDIO", "tokenCount": 500}])
    expected_in = (100 * 0.75 + 1000 * 3.00) / M
    expected_out = 500 * 12.00 / M
    for usage in (ai_studio, vertex):
        cost = cost_of(usage, price)
        assert cost is not None
        assert cost.input == pytest.approx(expected_in) and cost.output == pytest.approx(expected_out)
        assert usage.total_tokens == 1600


def test_thinking_outside_the_total_and_gaps_are_billed() -> None:
    price = TABLE.lookup("gemini-3.8-live")
    usage = _usage(promptTokenCount=1000, responseTokenCount=300, totalTokenCount=1300, thoughtsTokenCount=200,
                   promptTokensDetails=[{"modality": "TEXT", "tokenCount": 100},
                                        {"modality": "AUDIO", "tokenCount": 600}],  # 300 unattributed
                   responseTokensDetails=[{"modality": "AUDIO", "tokenCount": 300}])
    assert usage.output_thinking == 200 and usage.input_gap == 300
    assert usage.total_tokens == 1500  # thinking counted although totalTokenCount leaves it out
    cost = cost_of(usage, price)
    # the gap is billed at the highest price among the modalities the report names (audio here)
    assert cost.input == pytest.approx((100 * 0.75 + 600 * 3.0 + 300 * 3.0) / M)
    assert cost.output == pytest.approx((300 * 12.0 + 200 * 4.5) / M)


def test_cached_tokens_are_billed_at_the_cached_price() -> None:
    price = TABLE.lookup("gemini-3.8-live", {"cache_read_input_token_cost": 0.1 / M})
    usage = _usage(promptTokenCount=1000, cachedContentTokenCount=400, responseTokenCount=0,
                   promptTokensDetails=[{"modality": "TEXT", "tokenCount": 1000}])
    assert (usage.input_text, usage.input_cached) == (1000, 400)  # as reported: cached tokens are text
    assert (usage.billed()["input_text"], usage.billed()["input_cached"]) == (600, 400)  # as billed
    assert cost_of(usage, price).input == pytest.approx((600 * 0.75 + 400 * 0.1) / M)


def test_unknown_price_is_unknown_not_free() -> None:
    assert cost_of(_usage(promptTokenCount=10), None) is None
    partial = TABLE.lookup("x", {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6})
    audio = _usage(promptTokenCount=10, promptTokensDetails=[{"modality": "AUDIO", "tokenCount": 10}])
    assert cost_of(audio, partial) is None  # no audio price for this model


def _frame(**message: object) -> str:
    return json.dumps(message)


def test_meter_latest_report_of_a_turn_wins_and_late_usage_belongs_to_its_turn() -> None:
    meter = UsageLedger()
    turn = {"serverContent": {"modelTurn": {"parts": [{"text": "hi"}]}}}
    meter.observe(_frame(**turn))
    meter.observe(_frame(usageMetadata={"promptTokenCount": 10, "responseTokenCount": 1}))  # a running total
    meter.observe(_frame(serverContent={"turnComplete": True}))
    meter.observe(_frame(usageMetadata={"promptTokenCount": 10, "responseTokenCount": 5}))  # after turnComplete
    assert meter.current().total_tokens == 15
    meter.observe(_frame(**turn))  # the next turn: the previous one is final
    assert meter.total.total_tokens == 15 and meter.pending is None
    meter.observe(_frame(serverContent={"turnComplete": True}, usageMetadata={"promptTokenCount": 20,
                                                                               "responseTokenCount": 2}))
    meter.commit()
    assert meter.total.input_tokens == 30 and meter.total.output_tokens == 7


def test_unknown_price_warning_names_the_model_once(caplog: pytest.LogCaptureFixture) -> None:
    from livegate.accounting.database import open_database
    from livegate.accounting.gate import Accounting
    from livegate.accounting.store import Store

    accounting = Accounting(Store(open_database(None, None)), TABLE, master_key=None)
    with caplog.at_level(logging.WARNING, logger="livegate.accounting"):
        assert accounting.price("gemini-9-imaginary", None) is None
        assert accounting.price("gemini-9-imaginary", None) is None
    warnings = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert len(warnings) == 1 and "gemini-9-imaginary" in warnings[0]


def test_lint_checks_the_price_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from livegate.cli import main

    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, target)
    assert main(["lint", "--mappings", str(target)]) == 0
    text = (target / "prices.yaml").read_text()
    (target / "prices.yaml").write_text(text.replace("    date: \"2026-11-01\"\n", "", 1))
    assert main(["lint", "--mappings", str(target)]) == 1
    assert "needs a `date` and a `source`" in capsys.readouterr().err


def test_cumulative_usage_models_take_the_latest_report(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text(yaml.safe_dump({"models": [{"match": ["gemini-cumulative"], "input_text": 1, "output_text": 2,
                                                 "usage": "cumulative", "date": "2026-12-02", "source": "test"}]}))
    price = PriceTable.load(table).lookup("gemini-cumulative")
    assert price.cumulative_usage
    meter = UsageLedger(cumulative=True)
    for prompt in (10, 25):  # two turns; the second report includes the first
        meter.observe(_frame(serverContent={"modelTurn": {"parts": [{"text": "x"}]}}))
        meter.observe(_frame(usageMetadata={"promptTokenCount": prompt, "responseTokenCount": prompt // 5}))
    assert meter.current().input_tokens == 25
    meter.commit()
    assert meter.total.input_tokens == 25 and cost_of(meter.total, price).input == pytest.approx(25 / M)
