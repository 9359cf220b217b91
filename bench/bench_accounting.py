"""What accounting adds to the audio path: the per-frame work of a session with accounting on (the Grant's
frame counters and usage meter, as realtime.py calls them) against the same work with it off.

    python bench/bench_accounting.py [--rounds N] [--trials T]

Each trial measures "off" and "on" back to back (interleaved, so a busy neighbour hits both alike) and
reports their ratio; the figure is the median ratio over the trials, with the spread (min-max). The work
measured is what the server does per frame: translate + serialise, plus the Grant hooks when on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_translator import APPEND, AUDIO_DELTA, _send, _translator

from livegate.accounting.database import open_database
from livegate.accounting.gate import Accounting, Grant, Principal
from livegate.accounting.owners import TeamRecord, UserRecord
from livegate.accounting.prices import PriceTable
from livegate.accounting.store import KeyRecord, Store

USAGE = json.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": {
    "promptTokenCount": 1200, "responseTokenCount": 400, "totalTokenCount": 1600,
    "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 1100}, {"modality": "TEXT", "tokenCount": 100}],
    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 400}]}}).encode()


def _grant(owners: bool = False) -> Grant:
    """A session's Grant: a key with a budget, and with `owners` a team and a user with budgets too (every
    usage report is then charged and checked three times)."""
    accounting = Accounting(Store(open_database(None, None)), PriceTable.load(), master_key="sk-bench")
    key = KeyRecord(token_hash="0" * 64, key_alias="bench", max_budget=1000.0,
                    team_id="team" if owners else None, user_id="user" if owners else None)
    team = TeamRecord("team", max_budget=1000.0) if owners else None
    user = UserRecord("user", max_budget=1000.0) if owners else None
    grant = Grant(accounting, Principal("key", key.token_hash, key, None, team, user), "/v1/realtime", {}, None,
                  True, None)
    grant.bind_model("gpt-realtime", "gemini-3.8-live")
    accounting.keys[key.token_hash] = key
    return grant


def _time_us(fn: Callable[[], None], rounds: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(rounds):
        fn()
    return (time.perf_counter_ns() - start) / rounds / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    asyncio.set_event_loop(asyncio.new_event_loop())
    grant = _grant()
    audio = _translator("audio")
    audio.from_client(APPEND)

    def append_off() -> None:
        _send(audio.from_client(APPEND))

    def append_on() -> None:
        grant.client_frame(APPEND)
        out = audio.from_client(APPEND)
        grant.client_messages(out.client)
        _send(out)

    def delta_off() -> None:
        _send(audio.from_upstream(AUDIO_DELTA))

    def delta_on() -> None:
        grant.upstream_frame(AUDIO_DELTA)
        out = audio.from_upstream(AUDIO_DELTA)
        grant.client_messages(out.client)
        _send(out)

    def usage_on() -> None:  # once per turn: parse the usage, cost it, queue the spend
        grant.upstream_frame(USAGE)

    cases = [("audio append (client, 100 ms)", append_off, append_on),
             ("audio delta (Gemini, 40 ms)", delta_off, delta_on)]
    print(f"{'event':32} {'off µs':>8} {'on µs':>8} {'ratio on/off (spread)':>24}")
    for name, off, on in cases:
        for fn in (off, on):
            _time_us(fn, 200)
        offs, ons, ratios = [], [], []
        for _ in range(args.trials):
            a, b = _time_us(off, args.rounds), _time_us(on, args.rounds)
            offs.append(a)
            ons.append(b)
            ratios.append(b / a)
        print(f"{name:32} {statistics.median(offs):8.1f} {statistics.median(ons):8.1f} "
              f"{statistics.median(ratios):10.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
    hooks = _time_us(lambda: grant.upstream_frame(AUDIO_DELTA), args.rounds * 5)
    print(f"\nGrant hooks alone per audio delta: {hooks:.2f} µs; per usage report (once a turn): "
          f"{_time_us(usage_on, args.rounds):.1f} µs")
    owned = _grant(owners=True)  # a key in a team, owned by a user: three budgets charged and checked
    key_only, three = [], []
    for _ in range(args.trials):
        key_only.append(_time_us(usage_on, args.rounds))
        three.append(_time_us(lambda: owned.upstream_frame(USAGE), args.rounds))
    ratios = [b / a for a, b in zip(key_only, three, strict=True)]
    print(f"per usage report, key + team + user vs key only: {statistics.median(three):.1f} µs vs "
          f"{statistics.median(key_only):.1f} µs, ratio {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
