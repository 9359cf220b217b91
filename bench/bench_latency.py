"""Latency livegate adds to a turn: the same turns through livegate and straight to the simulator.

    python bench/bench_latency.py [--turns N]

Both paths run in this process over loopback against the same simulator (no streaming delay), after a
warm-up turn, so the difference is livegate's: the OpenAI client frames, translation both ways and the
second WebSocket hop. Reported: median time from asking for a response to the first delta, and to the
end of the turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a repo tool: reuse the tests' server runner

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve


async def through_livegate(sim_url: str, turns: int) -> tuple[list[float], list[float]]:
    config = parse_config({"model_list": [{"model_name": "bench", "livegate_params": {
        "model": "simulator/bench", "api_base": sim_url}}]})
    first, done = [], []
    async with serve(create_app(config)) as url, \
            connect(url.replace("http", "ws") + "/v1/realtime?model=bench", compression=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        for turn in range(turns + 1):
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"turn {turn}"}]}}))
            start = time.perf_counter()
            await ws.send(json.dumps({"type": "response.create"}))
            got_first = None
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "response.output_text.delta" and got_first is None:
                    got_first = time.perf_counter()
                if event["type"] == "response.done":
                    break
            if turn:  # the first turn also opens the upstream: a warm-up
                first.append(got_first - start)
                done.append(time.perf_counter() - start)
    return first, done


async def direct(sim_url: str, turns: int) -> tuple[list[float], list[float]]:
    first, done = [], []
    url = sim_url + "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    async with connect(url, compression=None) as ws:
        await ws.send(json.dumps({"setup": {"model": "models/bench",
                                            "generationConfig": {"responseModalities": ["TEXT"]}}}))
        await ws.recv()
        for turn in range(turns + 1):
            start = time.perf_counter()
            await ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [
                {"text": f"turn {turn}"}]}], "turnComplete": True}}))
            got_first = None
            while True:
                message = json.loads(await ws.recv())
                if "modelTurn" in message.get("serverContent", {}) and got_first is None:
                    got_first = time.perf_counter()
                if message.get("serverContent", {}).get("turnComplete"):
                    break
            if turn:
                first.append(got_first - start)
                done.append(time.perf_counter() - start)
    return first, done


async def main(turns: int) -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        base_first, base_done = await direct(sim.url, turns)
        ours_first, ours_done = await through_livegate(sim.url, turns)
    print(f"{'median over ' + str(turns) + ' turns':28} {'direct ms':>10} {'livegate ms':>12} {'added ms':>9}")
    for name, base, ours in (("to the first delta", base_first, ours_first), ("to the end of the turn", base_done,
                                                                             ours_done)):
        b, o = statistics.median(base) * 1000, statistics.median(ours) * 1000
        print(f"{name:28} {b:10.2f} {o:12.2f} {o - b:9.2f}")


if __name__ == "__main__":
    logging.disable(logging.WARNING)  # the open-gateway warning is expected here
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    asyncio.run(main(parser.parse_args().turns))
