"""The audio hot path under load: livegate against a raw WebSocket byte relay, in the same run.

    python bench/bench_load.py [--sessions 50] [--seconds 5] [--repeats 3] [--workers 1] [--chunk-ms 20]

Three processes besides this one (the load generator):
- an echo upstream speaking just enough Gemini Live: it answers `setup` with `setupComplete` and sends
  every `realtimeInput` audio chunk back as a `serverContent` audio part (a binary frame, as Gemini does);
- a raw relay: a Python WebSocket server that copies frames between its client and the echo upstream,
  unchanged (the floor any Python gateway pays for two WebSocket hops);
- livegate itself (`livegate --config ...`), routed to the same echo upstream.

Phases run interleaved (direct, relay, livegate, then again, in a shuffled order per repeat), each with
N sessions streaming real-time pcm16 chunks (one every `--chunk-ms`). Reported per phase: the gateway
process's own CPU time (user + system, from /proc, summed over its worker processes) per chunk round
trip, its ratio to the relay in the same repeat, sessions per core that CPU cost allows, p50/p95/p99 of
the round trip with the direct path's same percentile subtracted (the added latency), and chunks lost.
The gateways are pinned to core 0 and the load generator and echo to the others, where the OS allows.

    python bench/bench_load.py --baseline-pythonpath DIR   adds a `baseline` livegate (another source tree) to
                                                           every repeat: before/after a change in the same run
    python bench/bench_load.py --startup     cold start to listening and idle RSS of `livegate`
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import random
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
TICK = os.sysconf("SC_CLK_TCK")
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


# -- the echo upstream and the relay (run as child processes of this script) ----------------------------------------

async def _echo_handler(ws) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            message = orjson.loads(raw)
            if "setup" in message:
                await ws.send(b'{"setupComplete": {}}')
                continue
            audio = (message.get("realtimeInput") or {}).get("audio")
            if audio:
                await ws.send(orjson.dumps({"serverContent": {"modelTurn": {"parts": [
                    {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": audio["data"]}}]}}}))


async def _relay_handler(ws, upstream_url: str) -> None:
    async with connect(upstream_url, compression=None, max_size=None) as up:
        async def pump(src, dst) -> None:
            with contextlib.suppress(ConnectionClosed):
                async for frame in src:
                    await dst.send(frame)

        tasks = [asyncio.create_task(pump(ws, up)), asyncio.create_task(pump(up, ws))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()


async def _serve_role(role: str, port: int, upstream: str | None) -> None:
    if role == "echo":
        handler = _echo_handler
    else:
        async def handler(ws) -> None:
            await _relay_handler(ws, upstream + GEMINI_PATH)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


# -- the load generator ---------------------------------------------------------------------------------------------

def _pcm_chunk(ms: int) -> bytes:
    count = 24 * ms
    return struct.pack(f"<{count}h", *(int(8000 * math.sin(i / 9)) for i in range(count)))


@dataclass
class Phase:
    kind: str  # direct, relay, livegate
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    cpu_s: float = 0.0
    window_s: float = 0.0
    failures: int = 0


def _seq_of(data: str) -> int:
    return struct.unpack_from("<I", base64.b64decode(data[:8]))[0]


async def _session(kind: str, url: str, pcm: bytes, chunk_s: float, t_start: float, t_measure: float,
                   t_stop: float, phase: Phase) -> None:
    pending: dict[int, float] = {}
    chunk = bytearray(pcm)
    openai = kind not in ("direct", "relay")  # a livegate speaks OpenAI Realtime to its clients
    try:
        async with connect(url, max_size=None) as ws:  # offers permessage-deflate, as the SDKs do
            if not openai:
                await ws.send(orjson.dumps({"setup": {"model": "models/bench"}}).decode())
                await ws.recv()

            async def reader() -> None:
                async for raw in ws:
                    message = orjson.loads(raw)
                    if openai:
                        if message.get("type") != "response.output_audio.delta":
                            continue
                        data = message["delta"]
                    else:
                        parts = ((message.get("serverContent") or {}).get("modelTurn") or {}).get("parts")
                        if not parts:
                            continue
                        data = parts[0]["inlineData"]["data"]
                    sent_at = pending.pop(_seq_of(data), None)
                    if sent_at is not None:
                        phase.received += 1
                        phase.latencies.append(time.perf_counter() - sent_at)

            read_task = asyncio.create_task(reader())
            seq = 0
            next_at = t_start + random.random() * chunk_s  # sessions spread over the 20 ms period
            while next_at < t_stop:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                struct.pack_into("<I", chunk, 0, seq)
                audio = base64.b64encode(chunk).decode()
                if openai:
                    frame = orjson.dumps({"type": "input_audio_buffer.append", "audio": audio})
                else:
                    frame = orjson.dumps({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=24000",
                                                                      "data": audio}}})
                now = time.perf_counter()
                if now >= t_measure:  # only chunks sent inside the measured window count
                    pending[seq] = now
                    phase.sent += 1
                await ws.send(frame.decode())
                seq += 1
                next_at += chunk_s
            await asyncio.sleep(1.0)  # let the last chunks come back; what has not is lost
            read_task.cancel()
    except (TimeoutError, OSError, ConnectionClosed) as exc:
        phase.failures += 1
        if phase.failures == 1:
            print(f"  {kind}: session failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants (uvicorn workers)."""
    return sum(_tree_cpu_by_process(pid).values())


def _tree_cpu_by_process(pid: int) -> dict[int, float]:
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    found, todo = {}, [pid]
    while todo:
        current = todo.pop()
        found[current] = times.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return found


async def _run_phase(kind: str, url: str, gateway_pid: int | None, args: argparse.Namespace) -> Phase:
    phase = Phase(kind)
    pcm = _pcm_chunk(args.chunk_ms)
    chunk_s = args.chunk_ms / 1000
    t_start = time.perf_counter() + 1.5  # connections are set up before the first chunk
    t_measure = t_start + args.warmup
    t_stop = t_measure + args.seconds
    sessions = [asyncio.create_task(_session(kind, url, pcm, chunk_s, t_start, t_measure, t_stop, phase))
                for _ in range(args.sessions)]
    await asyncio.sleep(t_measure - time.perf_counter())
    cpu0, wall0 = (_tree_cpu(gateway_pid) if gateway_pid else 0.0), time.perf_counter()
    await asyncio.sleep(t_stop - time.perf_counter() + 0.3)  # the tail of the window's round trips
    phase.cpu_s = (_tree_cpu(gateway_pid) - cpu0) if gateway_pid else 0.0
    phase.window_s = time.perf_counter() - wall0
    await asyncio.gather(*sessions)
    return phase


# -- processes ------------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pin(pid: int, cores: list[int]) -> None:
    if hasattr(os, "sched_setaffinity") and cores:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, set(cores))


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> float:
    """Seconds until `port` accepts connections."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.perf_counter() - start
        time.sleep(0.005)
    raise RuntimeError(f"nothing listening on {port} after {timeout} s")


def _start_role(role: str, port: int, upstream: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--role", role, "--port", str(port)]
    if upstream:
        cmd += ["--upstream", upstream]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def _livegate_cmd(config: Path, port: int, workers: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
           "--log-level", "critical", *extra]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd


def _temporary_store(env: dict[str, str] | None, directory: str) -> dict[str, str]:
    """The environment of a livegate the bench starts: its spend store in `directory`, never the user's own
    (~/.local/share/livegate) that a `livegate` with no store setting would use."""
    return {**(env if env is not None else os.environ), "LIVEGATE_DB": str(Path(directory) / "bench.db")}


def _write_config(directory: str, upstream: str) -> Path:
    path = Path(directory) / "bench.yaml"
    path.write_text(f"model_list:\n  - model_name: bench\n    livegate_params:\n      model: simulator/bench\n"
                    f"      api_base: {upstream}\n")
    return path


def _rss_mb(pid: int) -> float:
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1])
    return total / 1024


def _startup(args: argparse.Namespace) -> None:
    """Cold start to listening, and RSS once idle, over a few interleaved starts (of the baseline too)."""
    trees = [("livegate", None)] + ([("baseline", args.baseline_pythonpath)] if args.baseline_pythonpath else [])
    starts: dict[str, list[float]] = {name: [] for name, _ in trees}
    rss: dict[str, list[float]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory() as tmp:
        config = _write_config(tmp, "ws://127.0.0.1:9")
        for _ in range(args.repeats):
            for name, pythonpath in trees:
                env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
                port = _free_port()
                proc = subprocess.Popen(_livegate_cmd(config, port, 1, []), stderr=subprocess.DEVNULL,
                                        env=_temporary_store(env, tmp), cwd=tmp)
                try:
                    starts[name].append(_wait_port(port, proc))
                    time.sleep(0.5)
                    rss[name].append(_rss_mb(proc.pid))
                finally:
                    proc.terminate()
                    proc.wait()
    for name, _ in trees:
        s, r = starts[name], rss[name]
        print(f"{name:9} cold start to listening: median {statistics.median(s):.2f} s [{min(s):.2f}..{max(s):.2f}]; "
              f"idle RSS median {statistics.median(r):.1f} MB [{min(r):.1f}..{max(r):.1f}] over {len(s)} starts")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start_livegate(tmp: str, upstream: str, port: int, args: argparse.Namespace, pythonpath: str | None,
                    cores: list[int], extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    if pythonpath:  # another livegate source tree (e.g. the code before a change), same interpreter
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(_livegate_cmd(_write_config(tmp, upstream), port, args.workers, extra.split()),
                            env=_temporary_store(env, tmp), cwd=tmp)
    _pin(proc.pid, cores)  # uvicorn workers inherit it
    _wait_port(port, proc)
    return proc


async def _load(args: argparse.Namespace) -> None:
    gateway_cores = CORES[:1] if args.workers == 1 else CORES
    client_cores = CORES[1:] or CORES
    _pin(os.getpid(), client_cores)
    echo_port, relay_port = _free_port(), _free_port()
    upstream = f"ws://127.0.0.1:{echo_port}"
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            echo = _start_role("echo", echo_port)
            procs.append(echo)
            _pin(echo.pid, client_cores)
            relay = _start_role("relay", relay_port, upstream)
            procs.append(relay)
            _pin(relay.pid, gateway_cores)
            urls = {"direct": upstream + GEMINI_PATH, "relay": f"ws://127.0.0.1:{relay_port}" + GEMINI_PATH}
            pids: dict[str, int | None] = {"direct": None, "relay": relay.pid}
            gateways = [("livegate", None, args.livegate_args)]
            if args.baseline_pythonpath:
                gateways.append(("baseline", args.baseline_pythonpath, ""))
            for variant in args.variant:
                name, _, extra = variant.partition("=")
                gateways.append((name, None, extra))
            for name, pythonpath, extra in gateways:
                port = _free_port()
                proc = _start_livegate(tmp, upstream, port, args, pythonpath, gateway_cores, extra)
                procs.append(proc)
                urls[name], pids[name] = f"ws://127.0.0.1:{port}/v1/realtime?model=bench", proc.pid
            time.sleep(0.5 if args.workers == 1 else 2.0)
            kinds = list(urls)
            measured = [k for k in kinds if k != "direct"]
            print(f"{args.sessions} sessions x {args.chunk_ms} ms chunks, {args.seconds} s measured per phase, "
                  f"{args.repeats} repeats, livegate workers: {args.workers}, cores: gateway {gateway_cores} "
                  f"client+echo {client_cores}")
            print(f"{'rep':>3} {'path':9} {'CPU µs/chunk':>12} {'x relay':>8} {'sess/core':>9} {'CPU %':>6} "
                  f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'+p50':>6} {'+p95':>6} {'+p99':>6} "
                  f"{'lost':>5} {'sent':>6}")
            ratios: dict[str, list[float]] = {k: [] for k in measured}
            cost: dict[str, list[float]] = {k: [] for k in measured}
            added: dict[str, list[list[float]]] = {k: [] for k in measured}
            lost_total = dict.fromkeys(measured, 0)
            for rep in range(1, args.repeats + 1):
                order = list(kinds)
                random.shuffle(order)  # interleaved: the machine's drift hits every path alike
                phases = {kind: await _run_phase(kind, urls[kind], pids[kind], args) for kind in order}
                direct, relay_phase = phases["direct"], phases["relay"]
                relay_cost = relay_phase.cpu_s / relay_phase.received * 1e6 if relay_phase.received else float("nan")
                for kind in kinds:
                    p = phases[kind]
                    per_chunk = p.cpu_s / p.received * 1e6 if p.received and pids[kind] else float("nan")
                    ratio = per_chunk / relay_cost if kind != "direct" else float("nan")
                    sessions_per_core = 1e6 / (per_chunk * (1000 / args.chunk_ms)) if pids[kind] else float("nan")
                    cpu_pct = p.cpu_s / p.window_s * 100 if p.window_s else float("nan")
                    q = [_pct(p.latencies, x) * 1000 for x in (0.5, 0.95, 0.99)]
                    d = [_pct(direct.latencies, x) * 1000 for x in (0.5, 0.95, 0.99)]
                    plus = [a - b for a, b in zip(q, d, strict=True)] if kind != "direct" else [0.0] * 3
                    lost = p.sent - p.received
                    print(f"{rep:>3} {kind:9} {per_chunk:12.1f} {ratio:8.2f} {sessions_per_core:9.0f} {cpu_pct:6.0f} "
                          f"{q[0]:7.2f} {q[1]:7.2f} {q[2]:7.2f} {plus[0]:6.2f} {plus[1]:6.2f} {plus[2]:6.2f} "
                          f"{lost:5d} {p.sent:6d}" + (f"  ({p.failures} sessions failed)" if p.failures else ""))
                    if kind != "direct":
                        cost[kind].append(per_chunk)
                        added[kind].append(plus)
                        lost_total[kind] += lost
                        ratios[kind].append(ratio)
            print("\nsummary over repeats (median [min..max]):")
            for kind in measured:
                c, r, p99 = cost[kind], ratios[kind], [a[2] for a in added[kind]]
                print(f"  {kind:9} CPU µs/chunk {statistics.median(c):6.1f} [{min(c):.1f}..{max(c):.1f}]  "
                      f"x relay {statistics.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]  "
                      f"added p99 ms {statistics.median(p99):6.2f} [{min(p99):.2f}..{max(p99):.2f}]  "
                      f"lost {lost_total[kind]}")
            if args.workers > 1:  # every worker should have served sessions
                for name in measured:
                    if name != "relay":
                        per_process = sorted(_tree_cpu_by_process(pids[name]).values(), reverse=True)
                        print(f"  {name} CPU s per process (supervisor and workers, whole run): "
                              + ", ".join(f"{t:.1f}" for t in per_process))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="streaming seconds before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-ms", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="livegate --workers")
    parser.add_argument("--livegate-args", default="", help="extra livegate command-line arguments")
    parser.add_argument("--baseline-pythonpath", metavar="DIR",
                        help="also run the livegate importable from DIR (e.g. an older checkout) as `baseline`")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="also run this livegate with extra arguments, e.g. 'ws-legacy=--ws websockets'")
    parser.add_argument("--startup", action="store_true", help="measure cold start and idle RSS instead")
    parser.add_argument("--role", choices=["echo", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        asyncio.run(_serve_role(args.role, args.port, args.upstream))
    elif args.startup:
        _startup(args)
    else:
        asyncio.run(_load(args))


if __name__ == "__main__":
    main()
