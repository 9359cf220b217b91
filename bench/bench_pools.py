"""What a pool of deployments adds to a session start: a whole first turn (handshake, the deployment picked, the
Gemini connection opened there, one text answer) through livegate with a pool of eight deployments (least-busy,
each with its own rpm, tpm and max_parallel_requests) against the same through a pool of one.

    python bench/bench_pools.py [--sessions N] [--trials T]

Both gateways run in this process over loopback against one simulator (no streaming delay). Each trial runs N
sessions on each, interleaved session by session (so a busy neighbour hits both alike), and reports the ratio
of their medians; the figure is the median ratio over the trials with its spread (min-max). The router's own
work (Pools.place + release, in-process counters) is timed alone too, in microseconds per session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a repo tool: reuse the tests' server runner

from livegate.config import Config, parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.upstream.pool import Placement, Pools
from tests.support import serve

KEY = "sk-bench-master"


def _config(sim_url: str, deployments: int) -> Config:
    limits = {"rpm": 1_000_000, "tpm": 1_000_000_000, "max_parallel_requests": 10_000} if deployments > 1 else {}
    return parse_config({
        "model_list": [{"model_name": "gpt-realtime", "model_info": {"id": f"d{i}"},
                        "litellm_params": {"model": "gemini/gemini-3.8-live", "api_key": "AIza-bench",
                                           "api_base": sim_url, **limits}} for i in range(deployments)],
        "router_settings": {"routing_strategy": "least-busy" if deployments > 1 else "simple-shuffle"},
        "general_settings": {"master_key": KEY}})


async def _first_turn(url: str) -> float:
    """Seconds from opening the WebSocket to the end of the first answer."""
    started = time.perf_counter()
    async with connect(f"{url}/v1/realtime?model=gpt-realtime",
                       additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        while json.loads(await ws.recv())["type"] != "response.done":
            pass
    return time.perf_counter() - started


async def _router_us(config: Config, sessions: int) -> float:
    pools = Pools(config, rng=random.Random(1))
    route = config.routes[0]
    started = time.perf_counter_ns()
    for _ in range(sessions):
        placement = await pools.place(route)
        assert isinstance(placement, Placement)
        await placement.release()
    return (time.perf_counter_ns() - started) / sessions / 1000


async def main(sessions: int, trials: int) -> None:
    logging.disable(logging.WARNING)
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        one, eight = _config(sim.url, 1), _config(sim.url, 8)
        async with serve(create_app(one, simulator_chunk_delay=0)) as a, \
                serve(create_app(eight, simulator_chunk_delay=0)) as b:
            urls = {"one": a.replace("http", "ws"), "eight": b.replace("http", "ws")}
            for url in urls.values():  # warm-up
                await _first_turn(url)
            ratios: list[float] = []
            medians: dict[str, list[float]] = {"one": [], "eight": []}
            for _ in range(trials):
                times: dict[str, list[float]] = {"one": [], "eight": []}
                for i in range(sessions):
                    order = ("one", "eight") if i % 2 == 0 else ("eight", "one")
                    for name in order:
                        times[name].append(await _first_turn(urls[name]))
                for name in times:
                    medians[name].append(statistics.median(times[name]))
                ratios.append(medians["eight"][-1] / medians["one"][-1])
        router = {name: statistics.median([await _router_us(config, 2000) for _ in range(trials)])
                  for name, config in (("one", one), ("eight", eight))}
    print(f"first turn, pool of 1: median {statistics.median(medians['one']) * 1000:.1f} ms "
          f"(trials {min(medians['one']) * 1000:.1f}-{max(medians['one']) * 1000:.1f})")
    print(f"first turn, pool of 8 (least-busy, limits): median {statistics.median(medians['eight']) * 1000:.1f} ms "
          f"(trials {min(medians['eight']) * 1000:.1f}-{max(medians['eight']) * 1000:.1f})")
    print(f"ratio 8/1: median {statistics.median(ratios):.3f} (spread {min(ratios):.3f}-{max(ratios):.3f}, "
          f"{trials} trials of {sessions} sessions each)")
    print(f"router alone (place + release): pool of 1 {router['one']:.1f} us, pool of 8 {router['eight']:.1f} us "
          f"per session")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--trials", type=int, default=5)
    args: Any = parser.parse_args()
    asyncio.run(main(args.sessions, args.trials))
