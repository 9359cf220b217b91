"""The audio hot path under load: livegate against a raw WebSocket byte relay, in the same run.

    python bench/bench_load.py [--sessions 50] [--seconds 5] [--repeats 3] [--workers 1] [--chunk-ms 20]
                               [--turn-chunks 50] [--relay-uvloop] [--baseline-pythonpath DIR] [--variant NAME=ARGS]
                               [--tree NAME=PYTHONPATH]

Three processes besides this one (the load generator):
- an echo upstream speaking just enough Gemini Live: it answers `setup` with `setupComplete`, sends every
  `realtimeInput` audio chunk back as a `serverContent` audio part (a binary frame, as Gemini does) and ends
  the model's turn every `--turn-chunks` chunks (turnComplete with usageMetadata), so livegate closes a
  response and opens the next one every second of audio (`--spread-turns`: each session's first turn ends
  after a random number of chunks, so the sessions' turn ends do not all fall into the same 20 ms);
- a raw relay: a Python WebSocket server (websockets, asyncio's loop) that copies frames between its client
  and the echo upstream, unchanged: the floor any Python gateway pays for two WebSocket hops. With
  `--relay-uvloop`, the same relay on uvloop runs too (`relay-uvloop`), the floor of a gateway on uvloop;
- livegate itself (`livegate --config ...`), routed to the same echo upstream.

Phases run interleaved (direct, relay, livegate, then again, in a shuffled order per repeat), each with
N sessions streaming real-time pcm16 chunks (one every `--chunk-ms`), spread over the chunk period (each
session starts at a random point of it; `--in-step` starts them together). Reported per phase: the gateway
process's own CPU time (user + system, from /proc, summed over its worker processes) per chunk round trip,
its ratio to the relay in the same repeat, the sessions per core that CPU cost allows in real time,
p50/p95/p99 of the round trip with the direct path's same percentile subtracted (the added latency), and
chunks lost; then the median and spread over the repeats. The gateways are pinned to core 0 and the load
generator and echo to the others, where the OS allows.

    python bench/bench_load.py --baseline-pythonpath DIR   adds a `baseline` livegate (another source tree,
                                                           e.g. `git archive main`) to every repeat;
                               --baseline-python PYTHON    runs it with another virtualenv's interpreter
                               --tree NAME=PYTHONPATH      adds another tree as NAME (each step of a change)
                               --floor                     adds `floor`: this tree with bench/floor/sitecustomize.py,
                                                           the audio frames' translation cut to orjson parse and
                                                           serialise (what the translator costs over the transport)
    python bench/bench_load.py --startup     cold start to listening and idle RSS, interleaved with the baseline
    python bench/bench_load.py --instructions   instructions per chunk round trip, counted by valgrind's
                                                callgrind in each gateway: they do not drift with the machine's
                                                load, as CPU time does (a few sessions, `--period-ms` apart; what
                                                the gateway does idle, per second, measured before and taken out;
                                                a gateway's first repeat pays one-time work: read the second)
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
IDLE_S = 8.0  # --instructions: the idle window measured before streaming starts
CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
ENGINE = str(Path(__file__).resolve().parent.parent / "engine")  # this tree's livegate
FLOOR = str(Path(__file__).resolve().parent / "floor")  # --floor: its sitecustomize.py


# -- the echo upstream and the relay (run as child processes of this script) ----------------------------------------

# What the echo sends after every `--turn-chunks` audio chunks of a session: the end of the model's turn, with
# its usage, as Gemini does. livegate then closes the response (response.done with usage) and opens the next with
# the next audio (response.created, output item and content part); the relay only copies the frame.
TURN_END = orjson.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": {
    "promptTokenCount": 50, "responseTokenCount": 50, "totalTokenCount": 100,
    "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 50}],
    "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 50}]}})


async def _echo_handler(ws, turn_chunks: int, spread_turns: bool = False) -> None:
    # --spread-turns: each connection's first turn ends after a random 1..N chunks, so the sessions' turn ends
    # fall at different moments of each second instead of all in the same 20 ms
    chunks = random.randrange(turn_chunks) if spread_turns and turn_chunks else 0
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
                chunks += 1
                if turn_chunks and chunks % turn_chunks == 0:
                    await ws.send(TURN_END)


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


async def _serve_role(role: str, port: int, upstream: str | None, turn_chunks: int,
                      spread_turns: bool = False) -> None:
    if role == "echo":
        async def handler(ws) -> None:
            await _echo_handler(ws, turn_chunks, spread_turns)
    else:
        async def handler(ws) -> None:
            await _relay_handler(ws, upstream + GEMINI_PATH)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


def _run_role(args: argparse.Namespace) -> None:
    if args.loop == "uvloop":  # the relay on uvloop: the floor for a gateway that runs on uvloop too
        import uvloop

        uvloop.run(_serve_role(args.role, args.port, args.upstream, args.turn_chunks, args.spread_turns))
    else:
        asyncio.run(_serve_role(args.role, args.port, args.upstream, args.turn_chunks, args.spread_turns))


# -- the load generator ---------------------------------------------------------------------------------------------

def _pcm_chunk(ms: int) -> bytes:
    count = 24 * ms
    return struct.pack(f"<{count}h", *(int(8000 * math.sin(i / 9)) for i in range(count)))


@dataclass
class Phase:
    kind: str  # direct, relay, livegate, ...
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    cost: float = 0.0  # CPU seconds, or instructions (--instructions), in the measured window
    window_s: float = 0.0
    failures: int = 0


def _seq_of(data: str) -> int:
    return struct.unpack_from("<I", base64.b64decode(data[:8]))[0]


async def _session(kind: str, url: str, pcm: bytes, period_s: float, t_start: float, t_measure: float,
                   t_stop: float, phase: Phase, drain_s: float) -> None:
    pending: dict[int, float] = {}
    chunk = bytearray(pcm)
    openai = not kind.startswith(("direct", "relay"))  # a livegate speaks OpenAI Realtime to its clients
    try:
        async with connect(url, max_size=None, open_timeout=120) as ws:  # offers permessage-deflate, as SDKs do
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
            next_at = t_start
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
                next_at += period_s
            drained = time.perf_counter() + drain_s  # let the last chunks come back; what has not is lost
            while pending and time.perf_counter() < drained:
                await asyncio.sleep(0.05)
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


class CpuMeter:
    """The gateway's CPU seconds (its process tree) over the measured window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = 0.0

    async def start(self) -> None:
        self._start = _tree_cpu(self.pid)

    async def stop(self) -> float:
        return _tree_cpu(self.pid) - self._start


class InstructionMeter:
    """Instructions the gateway (run under `valgrind --tool=callgrind --instr-atstart=no`, counting switched on
    once it listens: `counting_on`) executed over the measured window: zeroed at its start, dumped at its end."""

    def __init__(self, pid: int, out_dir: str) -> None:
        self.pid, self.out_dir = pid, out_dir

    @staticmethod
    def control(pid: int, *options: str) -> None:
        subprocess.run(["callgrind_control", *options, str(pid)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    @classmethod
    def counting_on(cls, pid: int) -> None:
        cls.control(pid, "-i", "on")

    async def start(self) -> None:
        await asyncio.to_thread(self.control, self.pid, "-z")

    async def stop(self) -> float:
        before = set(Path(self.out_dir).glob(f"cg.{self.pid}*"))
        await asyncio.to_thread(self.control, self.pid, "-d")
        dumps = sorted(set(Path(self.out_dir).glob(f"cg.{self.pid}*")) - before, key=lambda p: p.stat().st_mtime)
        for line in dumps[-1].read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return float(line.split()[1])
        raise RuntimeError(f"no instruction total in {dumps[-1]}")


async def _run_phase(kind: str, url: str, meter: CpuMeter | InstructionMeter | None, args: argparse.Namespace,
                     period_s: float) -> Phase:
    phase = Phase(kind)
    pcm = _pcm_chunk(args.chunk_ms)
    t_start = time.perf_counter() + args.connect_s  # connections are set up before the first chunk
    t_measure = t_start + args.warmup
    t_stop = t_measure + args.seconds
    offsets = [0.0 if args.in_step else random.random() * period_s for _ in range(args.sessions)]
    drain_s = 60.0 if args.instructions else 1.0  # a gateway under callgrind answers slowly: wait for every chunk
    sessions = [asyncio.create_task(_session(kind, url, pcm, period_s, t_start + offset, t_measure, t_stop, phase,
                                             drain_s))
                for offset in offsets]
    idle_rate = 0.0
    if isinstance(meter, InstructionMeter):
        # What the gateway does with its sessions open and silent (uvicorn's 10 ticks a second, keepalives),
        # per second: at a few chunks a second under callgrind it would weigh on every chunk, at real load not.
        await asyncio.sleep(t_start - IDLE_S - 1.0 - time.perf_counter())
        await meter.start()
        idle0 = time.perf_counter()
        await asyncio.sleep(IDLE_S)
        idle_rate = await meter.stop() / (time.perf_counter() - idle0)
    await asyncio.sleep(t_measure - time.perf_counter())
    if meter is not None:
        await meter.start()
    wall0 = time.perf_counter()
    await asyncio.sleep(t_stop - time.perf_counter() + 0.3)  # the tail of the window's round trips
    if args.instructions:  # every chunk of the window counted in: wait for the last one
        drained = time.perf_counter() + drain_s
        while phase.received < phase.sent and time.perf_counter() < drained:
            await asyncio.sleep(0.05)
    phase.cost = await meter.stop() if meter is not None else 0.0
    phase.cost -= idle_rate * (time.perf_counter() - wall0)
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


def _callgrind(out_dir: str) -> list[str]:
    """The prefix that runs a gateway under callgrind, counting nothing until told (InstructionMeter)."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_dir}/cg.%p"]


def _start_role(role: str, port: int, args: argparse.Namespace, upstream: str | None = None, loop: str = "asyncio",
                prefix: list[str] | None = None) -> subprocess.Popen:
    cmd = [*(prefix or []), sys.executable, __file__, "--role", role, "--port", str(port), "--loop", loop,
           "--turn-chunks", str(args.turn_chunks)] + (["--spread-turns"] if args.spread_turns else [])
    if upstream:
        cmd += ["--upstream", upstream]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if prefix else None)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def _livegate_cmd(config: Path, port: int, workers: int, extra: list[str], python: str | None = None) -> list[str]:
    cmd = [python or sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
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


def _spread(values: list[float], digits: int = 2) -> str:
    """`median [min..max]`, the way every figure of this bench is reported."""
    if not values:
        return "nan"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def _startup(args: argparse.Namespace) -> None:
    """Cold start to listening, and RSS once idle, over interleaved starts (of the baseline too)."""
    trees = [("livegate", None)] + ([("baseline", args.baseline_pythonpath)] if _has_baseline(args) else [])
    starts: dict[str, list[float]] = {name: [] for name, _ in trees}
    rss: dict[str, list[float]] = {name: [] for name, _ in trees}
    with tempfile.TemporaryDirectory() as tmp:
        config = _write_config(tmp, "ws://127.0.0.1:9")
        for _ in range(args.repeats):
            order = list(trees)
            random.shuffle(order)
            for name, pythonpath in order:
                env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
                port = _free_port()
                python, extra = (args.baseline_python, []) if name == "baseline" else (None, args.livegate_args.split())
                proc = subprocess.Popen(_livegate_cmd(config, port, 1, extra, python),
                                        stderr=subprocess.DEVNULL, env=_temporary_store(env, tmp), cwd=tmp)
                try:
                    starts[name].append(_wait_port(port, proc))
                    time.sleep(3.0)  # idle: the mappings made into Python after start (server/app.py)
                    rss[name].append(_rss_mb(proc.pid))
                finally:
                    proc.terminate()
                    proc.wait()
    for name, _ in trees:
        print(f"{name:9} cold start to listening: median {_spread(starts[name])} s; "
              f"idle RSS median {_spread(rss[name], 1)} MB over {len(starts[name])} starts")
    if _has_baseline(args):
        ratio = [a / b for a, b in zip(starts["livegate"], starts["baseline"], strict=True)]
        print(f"cold start livegate / baseline, start by start: {_spread(ratio)}; idle RSS difference "
              f"{statistics.median(rss['livegate']) - statistics.median(rss['baseline']):+.1f} MB")


def _has_baseline(args: argparse.Namespace) -> bool:
    return bool(args.baseline_pythonpath or args.baseline_python)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _start_livegate(tmp: str, upstream: str, port: int, args: argparse.Namespace, pythonpath: str | None,
                    cores: list[int], extra: str, prefix: list[str] | None = None,
                    start_timeout: float = 30, python: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if pythonpath:  # another livegate source tree (e.g. the code before a change), same interpreter
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen([*(prefix or []), *_livegate_cmd(_write_config(tmp, upstream), port, args.workers,
                                                             extra.split(), python)],
                            env=_temporary_store(env, tmp), cwd=tmp, stderr=subprocess.DEVNULL if prefix else None)
    _pin(proc.pid, cores)  # uvicorn workers inherit it
    _wait_port(port, proc, start_timeout)
    return proc


async def _load(args: argparse.Namespace) -> None:
    counting = args.instructions  # instructions under callgrind instead of CPU time
    gateway_cores = CORES[:1] if args.workers == 1 else CORES
    client_cores = CORES[1:] or CORES
    _pin(os.getpid(), client_cores)
    echo_port = _free_port()
    upstream = f"ws://127.0.0.1:{echo_port}"
    procs: list[subprocess.Popen] = []
    period_s = (args.period_ms or args.chunk_ms) / 1000
    with tempfile.TemporaryDirectory() as tmp:
        prefix = _callgrind(tmp) if counting else None
        start_timeout = 600 if counting else 30
        try:
            echo = _start_role("echo", echo_port, args)
            procs.append(echo)
            _pin(echo.pid, client_cores)
            urls = {"direct": upstream + GEMINI_PATH}
            pids: dict[str, int] = {}
            relays = [("relay", "asyncio")] + ([("relay-uvloop", "uvloop")] if args.relay_uvloop else [])
            for name, loop in relays:
                port = _free_port()
                relay = _start_role("relay", port, args, upstream, loop, prefix)
                procs.append(relay)
                _pin(relay.pid, gateway_cores)
                urls[name], pids[name] = f"ws://127.0.0.1:{port}" + GEMINI_PATH, relay.pid
            gateways = [("livegate", None, args.livegate_args)]
            if _has_baseline(args):
                gateways.append(("baseline", args.baseline_pythonpath, ""))
            for variant in args.variant:
                name, _, extra = variant.partition("=")
                gateways.append((name, None, extra))
            for tree in args.tree:
                name, _, pythonpath = tree.partition("=")
                gateways.append((name, pythonpath, ""))
            if args.floor:  # this tree with the audio frames' translation reduced to parse and serialise
                gateways.append(("floor", f"{ENGINE}{os.pathsep}{FLOOR}", ""))
            for name, pythonpath, extra in gateways:
                port = _free_port()
                proc = _start_livegate(tmp, upstream, port, args, pythonpath, gateway_cores, extra, prefix,
                                       start_timeout, args.baseline_python if name == "baseline" else None)
                procs.append(proc)
                urls[name], pids[name] = f"ws://127.0.0.1:{port}/v1/realtime?model=bench", proc.pid
            if counting:
                for pid in pids.values():
                    InstructionMeter.counting_on(pid)
            # settled: each gateway's idle-time work after start (its mappings made into Python) done
            time.sleep(2.0 if args.workers == 1 else 3.0)
            kinds = list(urls)
            measured = [k for k in kinds if k != "direct"]
            unit = "instr/chunk" if counting else "CPU µs/chunk"
            print(f"{args.sessions} sessions x {args.chunk_ms} ms chunks every {period_s * 1000:g} ms "
                  f"({'in step' if args.in_step else 'spread over the period'}), a turn ending every "
                  f"{args.turn_chunks} chunks{' (spread)' if args.spread_turns else ''}, "
                  f"{args.seconds:g} s measured per phase, {args.repeats} repeats, "
                  f"livegate workers: {args.workers}, cores: gateway {gateway_cores} client+echo {client_cores}"
                  + (", counted by callgrind" if counting else ""))
            print(f"{'rep':>3} {'path':12} {unit:>12} {'x relay':>8} {'sess/core':>9} {'CPU %':>6} "
                  f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'+p50':>6} {'+p95':>6} {'+p99':>6} "
                  f"{'lost':>5} {'sent':>6}")
            floors = [name for name, _ in relays]
            ratios: dict[str, dict[str, list[float]]] = {k: {f: [] for f in floors} for k in measured}
            cost: dict[str, list[float]] = {k: [] for k in measured}
            per_core: dict[str, list[float]] = {k: [] for k in measured}
            added: dict[str, list[list[float]]] = {k: [] for k in measured}
            lost_total = dict.fromkeys(measured, 0)
            to_baseline: dict[str, list[float]] = {k: [] for k in measured}  # cost / the baseline's, per repeat
            for rep in range(1, args.repeats + 1):
                order = list(kinds)
                random.shuffle(order)  # interleaved: the machine's drift hits every path alike
                phases = {}
                for kind in order:
                    meter = None
                    if kind in pids:
                        meter = InstructionMeter(pids[kind], tmp) if counting else CpuMeter(pids[kind])
                    phases[kind] = await _run_phase(kind, urls[kind], meter, args, period_s)
                direct = phases["direct"]
                unit_cost = {k: (p.cost / p.received if p.received and k in pids else float("nan"))
                             for k, p in phases.items()}
                for kind in kinds:
                    p = phases[kind]
                    per_chunk = unit_cost[kind] * (1 if counting else 1e6)
                    ratio = unit_cost[kind] / unit_cost["relay"] if kind != "direct" else float("nan")
                    sessions_per_core = (1 / (unit_cost[kind] / period_s)) if kind in pids and not counting \
                        else float("nan")
                    cpu_pct = p.cost / p.window_s * 100 if p.window_s and not counting else float("nan")
                    q = [_pct(p.latencies, x) * 1000 for x in (0.5, 0.95, 0.99)]
                    d = [_pct(direct.latencies, x) * 1000 for x in (0.5, 0.95, 0.99)]
                    plus = [a - b for a, b in zip(q, d, strict=True)] if kind != "direct" else [0.0] * 3
                    lost = p.sent - p.received
                    print(f"{rep:>3} {kind:12} {per_chunk:12.1f} {ratio:8.2f} {sessions_per_core:9.0f} "
                          f"{cpu_pct:6.0f} {q[0]:7.2f} {q[1]:7.2f} {q[2]:7.2f} {plus[0]:6.2f} {plus[1]:6.2f} "
                          f"{plus[2]:6.2f} {lost:5d} {p.sent:6d}"
                          + (f"  ({p.failures} sessions failed)" if p.failures else ""))
                    if kind != "direct":
                        cost[kind].append(per_chunk)
                        per_core[kind].append(sessions_per_core)
                        added[kind].append(plus)
                        lost_total[kind] += lost
                        for floor in floors:
                            ratios[kind][floor].append(unit_cost[kind] / unit_cost[floor])
                        if "baseline" in unit_cost and kind != "baseline":
                            to_baseline[kind].append(unit_cost[kind] / unit_cost["baseline"])
            print("\nsummary over repeats (median [min..max]):")
            for kind in measured:
                against = "  ".join(f"x {floor} {_spread(ratios[kind][floor])}" for floor in floors if floor != kind)
                if to_baseline[kind]:
                    against += f"  x baseline {_spread(to_baseline[kind])}"
                line = f"  {kind:12} {unit} {_spread(cost[kind], 1)}  {against}"
                if not counting:
                    line += (f"  sessions/core {_spread(per_core[kind], 0)}  added p99 ms "
                             f"{_spread([a[2] for a in added[kind]])}")
                print(line + f"  lost {lost_total[kind]}")
            if args.workers > 1:  # every worker should have served sessions
                for name in measured:
                    if not name.startswith("relay"):
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
    parser.add_argument("--sessions", type=int, default=None, help="concurrent sessions (50; 2 with --instructions)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per phase (5; 20 counting)")
    parser.add_argument("--warmup", type=float, default=1.0, help="streaming seconds before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-ms", type=int, default=20, help="audio per chunk")
    parser.add_argument("--period-ms", type=int, default=None,
                        help="time between a session's chunks (the chunk's duration: real time; 500 counting)")
    parser.add_argument("--turn-chunks", type=int, default=50, help="the echo ends the model's turn every N chunks")
    parser.add_argument("--spread-turns", action="store_true",
                        help="start each session's turns at a random chunk, so turn ends do not all fall together")
    parser.add_argument("--in-step", action="store_true", help="start every session at the same point of the period")
    parser.add_argument("--workers", type=int, default=1, help="livegate --workers")
    parser.add_argument("--livegate-args", default="", help="extra livegate command-line arguments")
    parser.add_argument("--baseline-pythonpath", metavar="DIR",
                        help="also run the livegate importable from DIR (e.g. an older checkout) as `baseline`")
    parser.add_argument("--baseline-python", metavar="PYTHON",
                        help="the interpreter (of another virtualenv) that runs `baseline`, e.g. one without uvloop")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                        help="also run this livegate with extra arguments, e.g. 'asyncio=--loop asyncio'")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PYTHONPATH",
                        help="also run the livegate importable from PYTHONPATH as NAME (one per step of a change)")
    parser.add_argument("--floor", action="store_true",
                        help="also run this tree with bench/floor/ on its path (floor): the audio frames' "
                             "translation reduced to orjson parse and serialise, the transport's floor")
    parser.add_argument("--relay-uvloop", action="store_true", help="also run the relay on uvloop (relay-uvloop)")
    parser.add_argument("--startup", action="store_true", help="measure cold start and idle RSS instead")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per chunk round trip with callgrind instead of CPU time")
    parser.add_argument("--role", choices=["echo", "relay"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sessions = args.sessions or (2 if args.instructions else 50)
    args.seconds = args.seconds or (20.0 if args.instructions else 5.0)
    args.period_ms = args.period_ms or (500 if args.instructions else None)
    args.connect_s = 30.0 if args.instructions else 1.5  # a gateway under callgrind takes its time to accept
    if args.role:
        _run_role(args)
    elif args.startup:
        _startup(args)
    else:
        asyncio.run(_load(args))


if __name__ == "__main__":
    main()
