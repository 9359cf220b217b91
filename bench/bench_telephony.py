"""Telephony audio cost: µs per 20 ms chunk through the translator, G.711 vs plain PCM, same run.

    python bench/bench_telephony.py [--rounds 5] [--chunks 2000]

Each row is the median over rounds of the mean time per chunk (client append in, Gemini audio delta
out, each through the whole translator including serialisation), interleaved with the PCM row so
machine drift hits both. Ratios are what to compare.
"""

from __future__ import annotations

import argparse
import base64
import math
import statistics
import struct
import time

import orjson

from livegate.mapping import load_mappings
from livegate.translation.translator import Translator

MAPPINGS = load_mappings()


def _session(fmt: str) -> Translator:
    translator = Translator(MAPPINGS, context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    translator.start()
    translator.from_client({"type": "session.update", "session": {"type": "realtime", "audio": {
        "input": {"format": {"type": fmt, **({"rate": 24000} if fmt == "audio/pcm" else {})}},
        "output": {"format": {"type": fmt, **({"rate": 24000} if fmt == "audio/pcm" else {})}}}}})
    translator.from_client({"type": "response.create"})
    return translator


def _tone(rate: int, ms: int) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n)))


def _per_chunk(fmt: str, chunks: int) -> tuple[float, float]:
    translator = _session(fmt)
    if fmt == "audio/pcm":
        mic = base64.b64encode(_tone(24000, 20)).decode()
    else:
        import audioop

        mic = base64.b64encode(audioop.lin2ulaw(_tone(8000, 20), 2)).decode()
    append = orjson.dumps({"type": "input_audio_buffer.append", "audio": mic})
    delta = orjson.dumps({"serverContent": {"modelTurn": {"parts": [
        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(_tone(24000, 20)).decode()}}]}}})
    start = time.perf_counter()
    for _ in range(chunks):
        for message in translator.from_client(append).upstream:
            orjson.dumps(message)
    middle = time.perf_counter()
    for _ in range(chunks):
        for message in translator.from_upstream(delta).client:
            orjson.dumps(message)
    end = time.perf_counter()
    return (middle - start) / chunks * 1e6, (end - middle) / chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"audio/pcm": [], "audio/pcmu": []}
    for _ in range(args.rounds):
        for fmt in results:  # interleaved
            results[fmt].append(_per_chunk(fmt, args.chunks))
    pcm_in = statistics.median(r[0] for r in results["audio/pcm"])
    pcm_out = statistics.median(r[1] for r in results["audio/pcm"])
    print(f"{'format':<12}{'append in µs':>14}{'ratio':>8}{'delta out µs':>14}{'ratio':>8}   (20 ms chunks)")
    for fmt, rows in results.items():
        cin, cout = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        spread = max(r[0] + r[1] for r in rows) / min(r[0] + r[1] for r in rows)
        print(f"{fmt:<12}{cin:>14.1f}{cin / pcm_in:>7.2f}x{cout:>14.1f}{cout / pcm_out:>7.2f}x   spread {spread:.2f}x")


if __name__ == "__main__":
    main()
