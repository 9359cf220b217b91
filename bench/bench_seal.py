"""The cost of sealing a session's stored state (livegate/takeover/seal.py) against encoding it unsealed.

    python bench/bench_seal.py [--trials N] [--items N]

A snapshot of a session with an MCP tool and `--items` conversation items (user and assistant messages with
their transcripts, a function call and its output every tenth item) is encoded as the writer did before
(`Snapshot.encode`), sealed with AES-GCM (a keyed gateway) and stripped of MCP credentials (an open gateway),
interleaved call by call in each trial. Printed per mode: the median µs and the ratio to the unsealed encode
(median over the trials, with its spread). Opening (at a take-over) is timed too. All of it runs in the state
writer's task, off the audio path.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from livegate.takeover.seal import Sealer
from livegate.translation.snapshot import Snapshot

ROW = ("sess_bench", "hash", "gpt-realtime")
MCP_TOOL: dict[str, Any] = {"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example/mcp",
                            "authorization": "sk-mcp-secret-bench", "headers": {"X-Team": "voice"},
                            "require_approval": "never"}


def snapshot(items: int) -> Snapshot:
    conversation = []
    for i in range(items):
        if i % 10 == 9:
            conversation.append({"id": f"item_{i}", "type": "function_call", "call_id": f"call_{i}",
                                 "name": "lookup_order", "arguments": '{"order_id": "A-1234", "verbose": true}'})
        else:
            role = "user" if i % 2 == 0 else "assistant"
            conversation.append({"id": f"item_{i}", "type": "message", "role": role, "status": "completed",
                                 "content": [{"type": "input_audio" if role == "user" else "output_audio",
                                              "transcript": "Could you tell me when my order will arrive? " * 2}]})
    session = {"id": ROW[0], "config": {"instructions": "You are a helpful agent. " * 20, "tools": [MCP_TOOL]},
               "mcp": {"crm": {"item_id": "item_mcp", "server": MCP_TOOL, "status": "listed", "tools": []}},
               "items": conversation, "handle": "h" * 200}
    return Snapshot(ROW[0], "ga", None, session, True)


def trial(calls: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    spent = dict.fromkeys(calls, 0.0)
    for _ in range(runs):
        for name, call in calls.items():  # interleaved: the machine's drift hits every mode alike
            started = time.perf_counter()
            call()
            spent[name] += time.perf_counter() - started
    return {name: total / runs * 1e6 for name, total in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--items", type=int, default=100)
    args = parser.parse_args()
    snap = snapshot(args.items)
    keyed, open_gateway = Sealer(None, "sk-master-bench"), Sealer(None, None)
    sealed = keyed.seal(snap, ROW)
    calls: dict[str, Callable[[], object]] = {
        "unsealed encode (before)": snap.encode,
        "sealed (keyed gateway)": lambda: keyed.seal(snap, ROW),
        "credentials dropped (open gateway)": lambda: open_gateway.seal(snap, ROW),
        "open a sealed row (take-over)": lambda: keyed.open(sealed, ROW),
    }
    results = [trial(calls, args.runs) for _ in range(args.trials)]
    print(f"{args.items}-item snapshot, {len(snap.encode())} bytes unsealed, {len(sealed)} sealed; "
          f"{args.trials} trials of {args.runs} interleaved runs")
    for name in calls:
        micros = statistics.median(r[name] for r in results)
        ratios = sorted(r[name] / r["unsealed encode (before)"] for r in results)
        print(f"  {name:36} {micros:8.1f} µs   x{statistics.median(ratios):.2f} "
              f"(spread {ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
