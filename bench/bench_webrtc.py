"""WebRTC calls against WebSocket sessions, same run: latency, CPU per second of call, calls per core.

    python bench/bench_webrtc.py [--rounds 5] [--calls 4] [--seconds 10]

0. Media conversion: µs per 20 ms frame of the call's audio, in (48 kHz stereo -> 16 kHz PCM) and out
   (Gemini's 24 kHz -> the 48 kHz frame the track sends), against the G.711 path's conversions
   (bench_telephony.py's codecs: 8 kHz G.711 -> 16 kHz, 24 kHz -> G.711), interleaved, medians of rounds.
1. Latency: from the end of the user's speech (the caller's last speech frame sent) to the first frame of
   the answer leaving livegate (WebRTC: the outgoing track's first audible frame; WebSocket: the first
   response.output_audio.delta received on loopback). The simulator answers at once (chunk delay 0) and
   ends the turn after its VAD's 500 ms of silence, so the difference between the paths is what WebRTC
   adds: aiortc's receive jitter buffer, Opus decoding, resampling, 20 ms frame pacing. In-process,
   rounds interleaved; medians and the spread of the per-round difference.
2. CPU: livegate alone in a subprocess (`livegate serve`, the simulator in another), `--calls` concurrent
   sessions each speaking a sentence every 4 s and hearing the answer, for `--seconds`: livegate's CPU
   seconds (/proc) per second of call, WebRTC and WebSocket interleaved. Calls per core = 1 / that (an
   upper bound: one core, nothing else running, no headroom).
Figures are ratios against the WebSocket path measured in the same run; the machine's speed drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy.signal import resample_poly
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from livegate.config import parse_config  # noqa: E402
from livegate.server import create_app  # noqa: E402
from livegate.simulator import GeminiLiveSimulator  # noqa: E402
from tests.support import serve  # noqa: E402
from tests.webrtc_support import LOOPBACK_SETTINGS, Caller, espeak  # noqa: E402

SENTENCE = "What will the weather be like tomorrow?"


def _model(url: str) -> dict[str, Any]:
    return {"model_name": "gpt-realtime", "litellm_params": {"model": "gemini/gemini-3.8-live", "api_key": "AIza-b",
                                                             "api_base": url}}


async def _webrtc_latency(base: str, app: Any, speech: np.ndarray) -> float:
    caller = Caller(base)
    await caller.connect()
    await caller.wait_for("session.created", timeout=10)
    (call,) = [c for c in app.state.webrtc_calls.calls.values()]
    first: list[float] = []
    call.speaker.on_frame = first.append
    caller.microphone.say(speech)
    await caller.wait_for("response.done", timeout=30)
    while not first:
        await asyncio.sleep(0.01)
    assert caller.microphone.spoke_until is not None
    latency = first[0] - caller.microphone.spoke_until
    await caller.hang_up()
    await asyncio.sleep(0.2)
    return latency


async def _websocket_latency(base: str, speech: np.ndarray) -> float:
    pcm = np.clip(np.rint(resample_poly(speech, 1, 2)), -32768, 32767).astype("<i2").tobytes()  # 24 kHz
    chunk = 960  # 20 ms
    async with connect(base.replace("http", "ws") + "/v1/realtime?model=gpt-realtime") as ws:
        assert orjson.loads(await ws.recv())["type"] == "session.created"
        first = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for message in ws:
                if orjson.loads(message)["type"] == "response.output_audio.delta" and not first.done():
                    first.set_result(time.monotonic())

        reader = asyncio.create_task(read())
        start, spoke_until = time.monotonic(), 0.0
        silence = bytes(chunk)
        for i in range(10_000):  # speech, then silence, in real time, until the answer starts
            data = pcm[i * chunk:(i + 1) * chunk] if i * chunk < len(pcm) else silence
            await ws.send(orjson.dumps({"type": "input_audio_buffer.append",
                                        "audio": base64.b64encode(data).decode()}).decode())
            if i * chunk < len(pcm):
                spoke_until = time.monotonic()
            if first.done():
                break
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
        latency = first.result() - spoke_until
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return latency


async def latency(rounds: int, speech: np.ndarray) -> None:
    async with GeminiLiveSimulator(chunk_delay=0, api_key=None) as sim:
        config = parse_config({"model_list": [_model(sim.url)], "livegate_settings": LOOPBACK_SETTINGS})
        app = create_app(config, simulator_chunk_delay=0)
        async with serve(app) as base:
            rows: list[tuple[float, float]] = []
            for _ in range(rounds):  # interleaved
                ws = await _websocket_latency(base, speech)
                rtc = await _webrtc_latency(base, app, speech)
                rows.append((ws, rtc))
    ws_ms = statistics.median(r[0] for r in rows) * 1000
    rtc_ms = statistics.median(r[1] for r in rows) * 1000
    added = [(r[1] - r[0]) * 1000 for r in rows]
    print("end of speech -> first answer audio leaving livegate (simulator VAD: 500 ms of silence included)")
    print(f"  WebSocket  median {ws_ms:7.1f} ms")
    print(f"  WebRTC     median {rtc_ms:7.1f} ms   ratio {rtc_ms / ws_ms:.2f}x")
    print(f"  added by WebRTC: median {statistics.median(added):.1f} ms, rounds {min(added):.1f}..{max(added):.1f} ms")


def media_cost(rounds: int, frames: int = 2000) -> None:
    from livegate.translation.audio import TelephonyDecoder, TelephonyEncoder
    from livegate.webrtc.media import Microphone
    from livegate.webrtc.playback import Playback

    t = np.arange(960) / 48000
    stereo = np.repeat((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 2)
    gemini = (np.sin(2 * np.pi * 440 * t[:480] * 2) * 8000).astype("<i2").tobytes()
    g711 = base64.b64encode(bytes(160)).decode()
    pcm24 = base64.b64encode(gemini).decode()

    def webrtc_in() -> None:
        microphone = Microphone()
        for i in range(frames):
            microphone.convert(stereo, 2, 48000, i * 960)

    def webrtc_out() -> None:
        playback = Playback()
        for _ in range(frames):
            playback.add("r", "i", gemini)
            playback.next_frame()

    def g711_in() -> None:
        decoder = TelephonyDecoder("pcmu")
        for _ in range(frames):
            decoder.decode(g711)

    def g711_out() -> None:
        encoder = TelephonyEncoder("pcmu")
        for _ in range(frames):
            encoder.encode(pcm24)

    runs = {"WebRTC in": webrtc_in, "G.711 in": g711_in, "WebRTC out": webrtc_out, "G.711 out": g711_out}
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():  # interleaved
            start = time.perf_counter()
            run()
            results[name].append((time.perf_counter() - start) / frames * 1e6)
    print("media conversion, µs per 20 ms frame (G.711: bench_telephony.py's codecs)")
    for way in ("in", "out"):
        base = statistics.median(results[f"G.711 {way}"])
        for name in (f"G.711 {way}", f"WebRTC {way}"):
            value = statistics.median(results[name])
            print(f"  {name:<11} {value:7.1f} µs   ratio {value / base:.2f}x   spread "
                  f"{max(results[name]) / min(results[name]):.2f}x")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def _processes() -> AsyncIterator[tuple[str, int]]:
    """The simulator and livegate as processes of their own; yields (livegate's URL, its pid)."""
    sim_port, port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(orjson.dumps({"model_list": [_model(f"ws://127.0.0.1:{sim_port}")],
                                        "livegate_settings": LOOPBACK_SETTINGS}).decode())
        env = {**os.environ, "PYTHONPATH": str(ROOT / "engine"), "LIVEGATE_DB": str(Path(tmp) / "db")}
        sim = subprocess.Popen([sys.executable, "-m", "livegate.simulator", "--port", str(sim_port),
                                "--chunk-delay", "0.01"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        gate = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.1):
                    break
                await asyncio.sleep(0.05)
            yield f"http://127.0.0.1:{port}", gate.pid
        finally:
            for process in (gate, sim):
                process.terminate()
                process.wait(10)


async def _webrtc_call(base: str, speech: np.ndarray, seconds: float) -> None:
    caller = Caller(base)
    await caller.connect()
    await caller.wait_for("session.created", timeout=10)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        caller.microphone.say(speech)
        await asyncio.sleep(4.0)
    await caller.hang_up()


async def _websocket_call(base: str, speech: np.ndarray, seconds: float) -> None:
    pcm = np.clip(np.rint(resample_poly(speech, 1, 2)), -32768, 32767).astype("<i2").tobytes()
    async with connect(base.replace("http", "ws") + "/v1/realtime?model=gpt-realtime") as ws:
        async def drain() -> None:
            async for _ in ws:
                pass

        reader = asyncio.create_task(drain())
        start, i = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            offset = (i * 960) % (200 * 960)  # a sentence every 4 s: speech, then silence
            data = pcm[offset:offset + 960] if offset < len(pcm) else bytes(960)
            await ws.send(orjson.dumps({"type": "input_audio_buffer.append",
                                        "audio": base64.b64encode(data.ljust(960, b"\0")).decode()}).decode())
            i += 1
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def cpu(rounds: int, calls: int, seconds: float, speech: np.ndarray) -> None:
    results: dict[str, list[float]] = {"WebSocket": [], "WebRTC": []}
    async with _processes() as (base, pid):
        for _ in range(rounds):
            for name, run in (("WebSocket", _websocket_call), ("WebRTC", _webrtc_call)):  # interleaved
                before, started = _cpu_seconds(pid), time.monotonic()
                await asyncio.gather(*(run(base, speech, seconds) for _ in range(calls)))
                elapsed = time.monotonic() - started
                results[name].append((_cpu_seconds(pid) - before) / (calls * elapsed))
                await asyncio.sleep(1.0)
    ws = statistics.median(results["WebSocket"])
    print(f"livegate's CPU per second of call ({calls} concurrent, {seconds:g} s, {rounds} rounds)")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"  {name:<10} {value * 1000:6.1f} ms/s   ratio {value / ws:.2f}x   calls per core <= "
              f"{1 / value:5.0f}   spread {max(values) / min(values):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speech = espeak(SENTENCE, Path(tmp) / "speech.wav") * 0.7
    media_cost(args.rounds)
    asyncio.run(latency(args.rounds, speech))
    if not args.skip_cpu:
        asyncio.run(cpu(max(1, args.rounds // 2), args.calls, args.seconds, speech))


if __name__ == "__main__":
    main()
