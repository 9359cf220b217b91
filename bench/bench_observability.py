"""What seeing inside a session costs (docs/operating/observability.md): CPU per audio chunk with tracing on
against off, and the latency each guardrail adds to a turn.

    python bench/bench_observability.py [--rounds N] [--trials N]

Audio chunk: one 20 ms append up and its 20 ms audio delta down through the session core, as the server
feeds it, three ways interleaved trial by trial (this machine's speed drifts within seconds):
- `bare`: no watcher at all (livegate before issue 22), the baseline;
- `off`: tracing off, as every session runs now (the turn watcher feeding the time-to-first-audio histogram);
- `on`: tracing on (the turn watcher and the session's tracer, a real OpenTelemetry SDK tracer whose spans
  go to an exporter that drops them, so the figure is livegate's and the SDK's CPU, not a network's).
Each trial is a median over `rounds` chunks; the ratios are per trial, printed as median [min-max].

Guardrails: one check of a 30-word user turn by the deny list, the PII guardrail and the HTTP guardrail
(against a loopback service answering at once: the floor of a real one's latency), each as the session's
SessionGuardrails runs it, in µs, median [min-max] of the trials, and as a ratio to the chunk's `bare` cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_translator import APPEND_20, AUDIO_DELTA_20, CONTEXT, MAPPINGS, VALIDATOR, _send

from livegate.observability.guardrails import SessionGuardrails, build_guardrails
from livegate.observability.turns import TurnWatch
from livegate.translation.observer import Observers, SessionObserver
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Translator

TURN = ("Could you tell me what the weather will be like in Paris tomorrow morning, and whether I should take an "
        "umbrella when I walk to the office around eight?")


def _core(observer: SessionObserver | None) -> tuple[SessionCore, int]:
    """A session core whose Gemini connection is open and whose audio response is under way."""
    core = SessionCore(Translator(MAPPINGS, context=CONTEXT, validator=VALIDATOR), observer=observer)
    core.start()
    core.client_frame(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["audio"]}}))
    opening = next(c for c in core.client_frame(APPEND_20).commands if hasattr(c, "setup"))
    core.upstream_opened(opening.link, b'{"setupComplete": {}}')
    core.client_frame(json.dumps({"type": "response.create"}))
    core.upstream_frame(opening.link, AUDIO_DELTA_20)
    return core, opening.link


def _tracer() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from livegate.observability.tracing import Tracing

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    return Tracing(Drop()).session({}, {"gen_ai.operation.name": "realtime"}, name="realtime bench")


def _chunk(observer: SessionObserver | None) -> Callable[[], None]:
    core, link = _core(observer)

    def run() -> None:
        _send(core.client_frame(APPEND_20))
        _send(core.upstream_frame(link, AUDIO_DELTA_20))
    return run


def _median_ns(fn: Callable[[], None], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples)


def _spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


class _Service:
    """A guardrail service on loopback that allows everything at once."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK stall between them

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b'{"action": "NONE"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/guard"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def _guardrail_us(guardrails: SessionGuardrails, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        await guardrails.check("pre_call", TURN)
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


async def _guardrails(trials: int, rounds: int) -> dict[str, list[float]]:
    service = _Service()
    built = build_guardrails([
        {"guardrail_name": "deny_list", "litellm_params": {"guardrail": "deny_list", "mode": "pre_call",
                                                           "deny": ["project falcon", "internal roadmap"],
                                                           "patterns": [r"\bcode ?name\b"]}},
        {"guardrail_name": "pii", "litellm_params": {"guardrail": "pii", "mode": "pre_call"}},
        {"guardrail_name": "http (loopback)", "litellm_params": {"guardrail": "generic_guardrail_api",
                                                                 "mode": "pre_call", "api_base": service.url}},
    ])
    out: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(trials):
        for name, guardrail in built.items():
            out[name].append(await _guardrail_us(SessionGuardrails({"pre_call": [guardrail]}),
                                                 rounds if guardrail.kind != "generic_guardrail_api" else rounds // 10))
    for guardrail in built.values():
        close = getattr(guardrail, "close", None)
        if close is not None:
            await close()
    service.server.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--trials", type=int, default=9)
    args = parser.parse_args()
    histogram: list[float] = []
    ways = {"bare": _chunk(None),
            "off": _chunk(TurnWatch(histogram.append)),
            "on": _chunk(Observers(TurnWatch(histogram.append, tracer := _tracer()), tracer))}
    for fn in ways.values():
        for _ in range(300):
            fn()
    times: dict[str, list[float]] = {name: [] for name in ways}
    for trial in range(args.trials):
        order = list(ways) if trial % 2 == 0 else list(reversed(ways))  # neither goes first every time
        for name in order:
            times[name].append(_median_ns(ways[name], args.rounds))
    bare = times["bare"]
    print(f"audio chunk round trip (20 ms up + 20 ms down), {args.trials} interleaved trials of {args.rounds}:")
    print(f"  bare (no watcher)      {_spread([t / 1000 for t in bare], '{:.1f}')} µs")
    for name in ("off", "on"):
        ratios = [t / b for t, b in zip(times[name], bare, strict=True)]
        print(f"  tracing {name:3} / bare     {_spread(ratios)}x")
    ratios = [on / off for on, off in zip(times["on"], times["off"], strict=True)]
    print(f"  tracing on / off       {_spread(ratios)}x   (goal: within 1.05)")

    checks = asyncio.run(_guardrails(args.trials, max(100, args.rounds // 3)))
    chunk_us = statistics.median(bare) / 1000
    print(f"\nguardrail latency per check (a {len(TURN.split())}-word user turn), median [min-max] of trials:")
    for name, samples in checks.items():
        print(f"  {name:18} {_spread(samples, '{:.1f}')} µs   = {statistics.median(samples) / chunk_us:.1f}x "
              "an audio chunk's translation")


if __name__ == "__main__":
    main()
