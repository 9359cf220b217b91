"""What a fault costs the user: time from the fault to the first byte of the next answer, against a fault-free turn.

    python bench/bench_gemini_faults.py [--rounds N] [--stall-ms MS]

One livegate and one simulator in this process, over loopback, no streaming delay. Each round opens a client
session, answers a warm-up turn (it opens Gemini), then, interleaved so that the machine's drift hits every row
alike:
  clean   a fault-free turn: from response.create to the first text delta
  1011    Gemini closes with 1011 after the first chunk of an answer (simulator fault close_mid_answer): from the
          simulator's close to the first delta of the answer asked again on the fresh re-seeded session
  stall   Gemini never answers the turn (simulator fault stall): from response.create to the first delta of the
          answer asked again on the same connection; it includes stall_timeout_ms (--stall-ms), which the table
          also shows taken off
Reported: p50 and p95 of each row over the rounds, and each row's p50 as a ratio of the clean turn's, with the
spread of the per-round ratios (p10-p90). A drained instance (SIGTERM, 1012) and a killed one (kill -9) are
measured by bench/bench_faults.py, which needs two processes behind HAProxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a repo tool: reuse the tests' server runner

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve

Session = tuple[ClientConnection, GeminiLiveSimulator, float]  # the client, the simulator, stall_timeout_s


async def _first_delta(ws: ClientConnection) -> float:
    """Read until the first text delta of a response that is not failed; its arrival time."""
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == "response.output_text.delta":
            return time.perf_counter()
        if event["type"] == "error":
            raise RuntimeError(event["error"])


async def _until_done(ws: ClientConnection) -> None:
    while json.loads(await ws.recv())["type"] != "response.done":
        pass


async def _ask(ws: ClientConnection, text: str) -> float:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))
    start = time.perf_counter()
    await ws.send(json.dumps({"type": "response.create"}))
    return start


async def clean(session: Session) -> float:
    ws, _, _ = session
    start = await _ask(ws, "a fault-free turn")
    first = await _first_delta(ws)
    await _until_done(ws)
    return first - start


async def after_1011(session: Session) -> float:
    ws, sim, _ = session
    sim.inject("close_mid_answer")
    await _ask(ws, "a turn cut by a 1011")
    await _first_delta(ws)  # the cut answer's only chunk; then its response.done (failed)
    await _until_done(ws)
    first = await _first_delta(ws)  # the answer asked again on the fresh session
    await _until_done(ws)
    closed = [s.closed_at for s in sim.sessions if s.close_code == 1011 and s.closed_at is not None]
    return first - closed[-1]


async def after_stall(session: Session) -> float:
    ws, sim, _ = session
    sim.inject("stall")
    start = await _ask(ws, "a turn Gemini never answers")
    first = await _first_delta(ws)
    await _until_done(ws)
    return first - start


# Each row: (name, measure); the process-level faults (drain, kill -9) are bench/bench_faults.py's.
ROWS: list[tuple[str, Callable[[Session], Awaitable[float]]]] = [
    ("clean", clean),
    ("1011", after_1011),
    ("stall", after_stall),
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(rounds: int, stall_ms: float) -> None:
    times: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        config = parse_config({"model_list": [{"model_name": "bench", "livegate_params": {
            "model": "simulator/gemini-3.8-live", "api_base": sim.url}}],
            "livegate_settings": {"stall_timeout_ms": stall_ms}})
        async with serve(create_app(config)) as url:
            for _ in range(rounds):
                async with connect(url.replace("http", "ws") + "/v1/realtime?model=bench", compression=None) as ws:
                    await ws.send(json.dumps({"type": "session.update", "session": {
                        "type": "realtime", "output_modalities": ["text"]}}))
                    await _ask(ws, "warm-up")
                    await _until_done(ws)
                    for name, measure in ROWS:
                        times[name].append(await measure((ws, sim, stall_ms / 1000)))
    base = statistics.median(times["clean"])
    print(f"{rounds} rounds, stall_timeout_ms {stall_ms:g}; time from the fault to the first byte of the next answer")
    print(f"{'row':10} {'p50 ms':>9} {'p95 ms':>9} {'p50/clean':>10} {'per-round p10-p90':>18}")
    for name, values in times.items():
        ratios = [v / c for v, c in zip(values, times["clean"], strict=True)]
        print(f"{name:10} {statistics.median(values) * 1000:9.1f} {_pct(values, 0.95) * 1000:9.1f} "
              f"{statistics.median(values) / base:10.1f} {_pct(ratios, 0.1):8.1f}-{_pct(ratios, 0.9):<8.1f}")
    beyond = [v - stall_ms / 1000 for v in times["stall"]]
    print(f"{'stall - stall_timeout_ms':26}: p50 {statistics.median(beyond) * 1000:.1f} ms, "
          f"p95 {_pct(beyond, 0.95) * 1000:.1f} ms ({statistics.median(beyond) / base:.1f}x the clean turn)")


def _args(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--stall-ms", type=float, default=500.0, help="livegate_settings stall_timeout_ms")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.disable(logging.WARNING)  # the open-gateway warning and the simulated faults' warnings are expected
    options = _args()
    asyncio.run(main(options.rounds, options.stall_ms))
