"""Time from a fault to the first byte of the next answer (issue 17), against a fault-free turn in the same run.

    python bench/bench_faults.py [--faults 6] [--database-url postgresql://...]

The gateway's own faults (issue 17 §2): two `livegate` processes behind HAProxy (the manual's config,
docs/operating/failures.md) share one store (an SQLite file on this host, or the PostgreSQL --database-url
names), a Gemini simulator runs in this process, and the openai SDK's GA client holds one text conversation
with the manual's reconnect hook. Rounds alternate (interleaved, so the machine's drift hits every row alike):

    turn        a fault-free turn: from response.create to the answer's first delta
    drain       SIGTERM to the instance holding the call, at rest; the client asks again as soon as its SDK
                has reconnected: from the signal to the answer's first delta (the SDK's reconnect backoff,
                the drain, the take-over and Gemini's resumption are all in it)
    kill -9     the same with SIGKILL: the other instance claims the session once the dead one has been
                silent for 4 s (takeover/service.py STALE_S), which dominates

After each fault the faulted instance is started again and HAProxy given time to see it up. Gemini's faults
(1011, stall: issue 17 §1) are another part of this bench. Prints p50 and p95 per row, in seconds, and each
fault row's p50 as a multiple of the fault-free turn's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openai import AsyncOpenAI  # noqa: E402

from livegate.simulator import GeminiLiveSimulator  # noqa: E402
from tests.fakes.haproxy import free_port, haproxy  # noqa: E402
from tests.fleet_support import MASTER, Fleet, fleet_config, start_instance  # noqa: E402

QUESTION = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What did I say before?"}]}


async def first_delta(conn: Any) -> float:
    """Ask, and return when the answer's first delta arrives (the rest of the answer is read too)."""
    await conn.conversation.item.create(item=QUESTION)
    await conn.response.create()
    first = None
    async for event in conn:
        if event.type == "response.output_text.delta" and first is None:
            first = time.monotonic()
        if event.type == "response.done":
            break
        if event.type == "error":
            raise RuntimeError(f"error event: {event.error}")
    assert first is not None
    return first


async def reconnected(conn: Any, dropped: Any) -> None:
    """Read until the SDK has noticed the close and reconnected."""
    async def read() -> None:
        async for _ in conn:
            pass

    reading = asyncio.create_task(read())
    try:
        async with asyncio.timeout(60):
            while conn._connection is dropped or conn._is_reconnecting:
                await asyncio.sleep(0.005)
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="livegate-bench-faults-"))
    database_url = args.database_url or f"sqlite:///{tmp / 'store.db'}"
    rows: dict[str, list[float]] = {"turn": [], "drain": [], "kill -9": []}
    async with GeminiLiveSimulator(chunk_delay=0.005) as sim:
        config = fleet_config(tmp, sim, database_url)
        fleet = Fleet("", sim)
        try:
            fleet.instances = list(await asyncio.gather(start_instance(config, tmp), start_instance(config, tmp)))
            with haproxy(free_port(), [i.port for i in fleet.instances]) as url:
                fleet.url = url
                session_id: list[str] = []

                def on_reconnecting(event: Any) -> dict[str, Any]:
                    return {"extra_query": {**dict(event.extra_query or {}), "session_id": session_id[0]}}

                client = AsyncOpenAI(api_key=MASTER, websocket_base_url=url.replace("http", "ws") + "/v1")
                async with client.realtime.connect(model="gpt-realtime", on_reconnecting=on_reconnecting) as conn:
                    session_id.append((await conn.recv()).session.id)
                    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                    await conn.recv()
                    await first_delta(conn)  # a first turn: Gemini connected, a handle issued
                    for round_ in range(args.faults):
                        for kind in ("turn", "drain", "kill -9"):
                            rows[kind].append(await one(fleet, conn, kind, tmp))
                            print(f"round {round_ + 1}: {kind:8} {rows[kind][-1]:.3f} s", flush=True)
        finally:
            fleet.stop_all()
    return rows


async def one(fleet: Fleet, conn: Any, kind: str, tmp: Path) -> float:
    if kind == "turn":
        asked = time.monotonic()
        return await first_delta(conn) - asked
    holder = await fleet.holder()
    await asyncio.sleep(0.3)  # the last turn's handle is stored
    dropped = conn._connection
    fault = time.monotonic()
    if kind == "drain":
        holder.proc.send_signal(signal.SIGTERM)
    else:
        holder.proc.kill()
    await reconnected(conn, dropped)
    took = await first_delta(conn) - fault
    holder.proc.wait(30)
    fleet.instances[fleet.instances.index(holder)] = await start_instance(holder.config, tmp, holder.port)
    await asyncio.sleep(2.5)  # HAProxy's checks find it up (rise 2, inter 1 s)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=6, help="faults of each kind (and fault-free turns)")
    parser.add_argument("--database-url", help="a PostgreSQL both instances share (default: an SQLite file)")
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    base = statistics.median(rows["turn"])
    print(f"\n{'row':10} {'p50 s':>8} {'p95 s':>8} {'p50 / turn':>11}   (n = {args.faults} each, interleaved)")
    for kind, samples in rows.items():
        ordered = sorted(samples)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(f"{kind:10} {statistics.median(samples):8.3f} {p95:8.3f} {statistics.median(samples) / base:10.1f}x")


if __name__ == "__main__":
    main()
