"""A response's worst-case cost: what a session reserves against its budgets before Gemini is sent what may
start the response (session_core.py asks; counters.py holds it; docs/operating/fleet.md).

    output: the session's max_output_tokens (else livegate_settings.budget_reservation_output_tokens) at the
            model's highest output price (audio, text or thinking);
    input:  the tokens of the latest turn, input and output (the context the next turn reads again, as Gemini
            Live bills it), at the model's highest input price; none before the first report, and none for
            models whose reports are session totals (their per-turn context is not reported).

Input the estimate did not foresee (a long new utterance) is charged when its usage is reported, like any
spend: the reservation bounds what one response can add beyond the budget, it does not meter audio.
"""

from __future__ import annotations

from livegate.accounting.prices import Price
from livegate.translation.usage import TokenUsage

# A budgeted session's responses are capped at this when the client sets no max_output_tokens (Gemini is sent it
# as maxOutputTokens, so the reservation is a true worst case): about five minutes of speech at 25 tokens/s, far
# below the models' own 64k output limit, whose reservation (~$0.77 of audio) would refuse small budgets outright.
DEFAULT_OUTPUT_TOKENS = 8192


def worst_case(price: Price | None, max_output_tokens: int | None, default_output_tokens: int,
               last_report: TokenUsage | None) -> tuple[float, int]:
    """(USD, the output tokens reserved for) of one response; 0 USD when the model has no price."""
    cap = max_output_tokens if max_output_tokens is not None and max_output_tokens > 0 else default_output_tokens
    if price is None:
        return 0.0, cap
    output_rate = max(r for r in (price.output_text, price.output_audio, price.output_thinking, 0.0) if r is not None)
    input_rate = max(r for r in (price.input_text, price.input_audio, price.input_image, price.input_video, 0.0)
                     if r is not None)
    context = 0 if last_report is None or price.cumulative_usage else last_report.total_tokens
    return cap * output_rate + context * input_rate, cap
