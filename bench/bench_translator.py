"""The translator's cost per event, against the floor of merely parsing and re-serialising the same message.

    python bench/bench_translator.py [--rounds N]

Each figure is the best of three medians over many runs of: the translator handling one raw frame (as the server
feeds it) plus serialising what it produced (as the server sends it). The floor is `json.loads` +
`json.dumps` of the same frame, measured in the same process, so the ratio travels across machines.
The "per chunk round trip" row is what bench/bench_load.py streams: one 20 ms append up and its 20 ms audio
delta down, validation included; the "through the session core" row is the same chunk as the server feeds it,
through the session core (translation/session_core.py) that wraps the translator. The last line turns the
audio-path costs into an estimate of concurrent audio sessions per core.

The snapshot rows (issue 17, sessions that outlive the process) compare a session core that hands its pump a
snapshot to store at each turn's edges (`checkpoints=True`, as every session with a shared store runs) with one
that does not, interleaved in the same process: the audio chunk round trip, and a whole text turn through the
core (where the snapshots are taken; the pump only queues them, the writer encodes and writes them elsewhere).
Each trial times the two call by call in alternation; printed: the on/off ratio's median and its spread over
the trials.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import struct
import time
from collections.abc import Callable

import orjson

from livegate.mapping import load_mappings
from livegate.translation.commands import StoreSession
from livegate.translation.session_core import SessionCore
from livegate.translation.translator import Translator
from livegate.translation.validation import ClientEventValidator

MAPPINGS = load_mappings()
VALIDATOR = ClientEventValidator()  # one per process, as in the server
CONTEXT = {"model": "gpt-realtime", "setup_model": "models/gemini-live-2.5-flash", "backend": "aistudio"}


def _pcm(ms: int) -> str:
    count = 24 * ms
    return base64.b64encode(struct.pack(f"<{count}h", *(int(8000 * math.sin(i / 9)) for i in range(count)))).decode()


APPEND = json.dumps({"type": "input_audio_buffer.append", "audio": _pcm(100)})  # 100 ms from a microphone
AUDIO_DELTA = json.dumps({"serverContent": {"modelTurn": {"parts": [
    {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": _pcm(40)}}]}}}).encode()  # Gemini sends binary
APPEND_20 = json.dumps({"type": "input_audio_buffer.append", "audio": _pcm(20)})  # one real-time chunk...
AUDIO_DELTA_20 = json.dumps({"serverContent": {"modelTurn": {"parts": [  # ...and its echo from Gemini
    {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": _pcm(20)}}]}}}).encode()
TEXT_DELTA = json.dumps({"serverContent": {"modelTurn": {"parts": [{"text": "a few words of an answer "}]}}}).encode()


def _translator(modality: str) -> Translator:
    translator = Translator(MAPPINGS, context=CONTEXT, validator=VALIDATOR)
    translator.start()
    translator.from_client(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                             "output_modalities": [modality]}}))
    translator.from_client(json.dumps({"type": "response.create"}))
    translator.from_upstream(TEXT_DELTA if modality == "text" else AUDIO_DELTA)  # the response is now open
    return translator


def _core(checkpoints: bool = False) -> tuple[SessionCore, int]:
    """A session core whose Gemini connection is open and whose response is under way (audio)."""
    core = SessionCore(Translator(MAPPINGS, context=CONTEXT, validator=VALIDATOR), checkpoints=checkpoints)
    core.start()
    core.client_frame(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["audio"]}}))
    opening = next(c for c in core.client_frame(APPEND).commands if hasattr(c, "setup"))
    core.upstream_opened(opening.link, b'{"setupComplete": {}}')
    core.client_frame(json.dumps({"type": "response.create"}))
    core.upstream_frame(opening.link, AUDIO_DELTA)
    return core, opening.link


QUEUED: dict[str, object] = {}  # what the pump hands the state writer (takeover/writer.py queues by session)


def _send(out) -> None:  # what the server does with an Output
    for message in out.client:
        orjson.dumps(message)
    for message in out.upstream:
        orjson.dumps(message)
    for command in out.commands:
        if isinstance(command, StoreSession):
            QUEUED[command.snapshot.session_id] = command.snapshot


def _core_turn(checkpoints: bool) -> Callable[[], None]:
    """A whole text turn through the session core, as the pump drives it (a new session each time)."""
    def run() -> None:
        core = SessionCore(Translator(MAPPINGS, context=CONTEXT, validator=VALIDATOR), checkpoints=checkpoints)
        _send(core.start())
        _send(core.client_frame(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"]}})))
        out = core.client_frame(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story"}]}}))
        _send(out)
        opening = next(c for c in out.commands if hasattr(c, "setup"))
        _send(core.upstream_opened(opening.link, b'{"setupComplete": {}}'))
        _send(core.client_frame(json.dumps({"type": "response.create"})))
        for _ in range(20):
            _send(core.upstream_frame(opening.link, TEXT_DELTA))
        _send(core.upstream_frame(opening.link, b'{"serverContent": {"turnComplete": true}, "usageMetadata": '
                                                b'{"promptTokenCount": 10, "responseTokenCount": 120}}'))
        _send(core.upstream_frame(opening.link, b'{"sessionResumptionUpdate": {"newHandle": "h1", '
                                                b'"resumable": true}}'))
    return run


def _alternating_us(a: Callable[[], object], b: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Medians of `a` and `b` timed call by call in alternation, so that the machine's drift hits both alike."""
    for _ in range(min(100, rounds)):
        a()
        b()
    times_a, times_b = [], []
    for i in range(rounds):
        for fn, into in ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a)):
            start = time.perf_counter_ns()
            fn()
            into.append(time.perf_counter_ns() - start)
    return statistics.median(times_a) / 1000, statistics.median(times_b) / 1000


def _snapshot_cost(rounds: int, trials: int = 7) -> None:
    """Checkpoints on against off, interleaved: each trial measures both, in alternating order."""
    on_core, on_link = _core(checkpoints=True)
    off_core, off_link = _core(checkpoints=False)
    cases = {
        "audio chunk round trip (20 ms)": (
            lambda: (_send(off_core.client_frame(APPEND_20)), _send(off_core.upstream_frame(off_link, AUDIO_DELTA_20))),
            lambda: (_send(on_core.client_frame(APPEND_20)), _send(on_core.upstream_frame(on_link, AUDIO_DELTA_20))),
            rounds),
        "whole text turn through the core": (_core_turn(False), _core_turn(True), max(100, rounds // 25)),
    }
    probe = _core_turn(True)
    QUEUED.clear()
    probe()
    assert QUEUED, "a turn through the core with checkpoints stores a snapshot"
    print(f"\n{'snapshots stored (issue 17)':34} {'off µs':>10} {'on µs':>10} {'on/off p50':>11} {'spread':>14}")
    for name, (off, on, n) in cases.items():
        offs: list[float] = []
        ons: list[float] = []
        ratios = []
        for _ in range(trials):
            pair_off, pair_on = _alternating_us(off, on, n)
            offs.append(pair_off)
            ons.append(pair_on)
            ratios.append(pair_on / pair_off)
        print(f"{name:34} {statistics.median(offs):10.1f} {statistics.median(ons):10.1f} "
              f"{statistics.median(ratios):10.3f}x {min(ratios):6.3f}-{max(ratios):.3f}")
    # What the writer task pays per stored state (on the event loop, once per turn edge, never per chunk): the
    # snapshot of a long conversation encoded to its row.
    core = SessionCore(Translator(MAPPINGS, context=CONTEXT, validator=VALIDATOR), checkpoints=True)
    _send(core.start())
    for i in range(100):
        _send(core.client_frame(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user" if i % 2 == 0 else "assistant",
            "content": [{"type": "input_text" if i % 2 == 0 else "output_text", "text": f"turn {i} " * 20}]}})))
    snapshot = core.snapshot()
    assert len(snapshot.session["items"]) == 100
    encode = _median_us(lambda: snapshot.encode() and None, max(200, rounds // 10))
    print(f"snapshot encoded by the writer, 100 items: {encode:.0f} µs ({len(snapshot.encode()) // 1024} KiB), "
          "once per turn edge")


def _turn() -> None:
    translator = Translator(MAPPINGS, context=CONTEXT, validator=VALIDATOR)
    _send(translator.start())
    _send(translator.from_client(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                                   "output_modalities": ["text"]}})))
    _send(translator.from_client(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Tell me a story"}]}})))
    _send(translator.from_client(json.dumps({"type": "response.create"})))
    _send(translator.from_upstream(b'{"setupComplete": {}}'))
    for _ in range(20):
        _send(translator.from_upstream(TEXT_DELTA))
    _send(translator.from_upstream(b'{"serverContent": {"turnComplete": true}, "usageMetadata": '
                                   b'{"promptTokenCount": 10, "responseTokenCount": 120}}'))


TURN_FRAMES = [json.dumps({"type": "session.update", "session": {"type": "realtime"}}), TEXT_DELTA] * 12


def _floor(frames: list[str | bytes]) -> Callable[[], None]:
    def run() -> None:
        for frame in frames:
            json.dumps(json.loads(frame))
    return run


def _median_us(fn: Callable[[], None], rounds: int, trials: int = 3) -> float:
    """The best of `trials` medians: a busy neighbour on a small machine only ever adds time."""
    for _ in range(min(200, rounds)):
        fn()
    medians = []
    for _ in range(trials):
        samples = []
        for _ in range(rounds):
            start = time.perf_counter_ns()
            fn()
            samples.append(time.perf_counter_ns() - start)
        medians.append(statistics.median(samples))
    return min(medians) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000)
    parser.add_argument("--snapshots-only", action="store_true", help="only the snapshot rows (issue 17)")
    args = parser.parse_args()
    if args.snapshots_only:
        _snapshot_cost(args.rounds)
        return
    audio, text = _translator("audio"), _translator("text")
    core, link = _core()
    audio.from_client(APPEND)  # Gemini setup sent: appends now take the steady-state path
    cases = [
        ("audio append (client, 100 ms)", lambda: _send(audio.from_client(APPEND)), _floor([APPEND]), args.rounds),
        ("audio delta (Gemini, 40 ms)", lambda: _send(audio.from_upstream(AUDIO_DELTA)), _floor([AUDIO_DELTA]),
         args.rounds),
        ("per chunk round trip (20 ms)", lambda: (_send(audio.from_client(APPEND_20)),
                                                  _send(audio.from_upstream(AUDIO_DELTA_20))),
         _floor([APPEND_20, AUDIO_DELTA_20]), args.rounds),
        ("  through the session core", lambda: (_send(core.client_frame(APPEND_20)),
                                                 _send(core.upstream_frame(link, AUDIO_DELTA_20))),
         _floor([APPEND_20, AUDIO_DELTA_20]), args.rounds),
        ("text delta (Gemini)", lambda: _send(text.from_upstream(TEXT_DELTA)), _floor([TEXT_DELTA]), args.rounds),
        ("whole text turn (24 frames)", _turn, _floor(TURN_FRAMES), max(200, args.rounds // 20)),
    ]
    print(f"{'event':34} {'livegate µs':>12} {'json floor µs':>14} {'ratio':>7}")
    results = {}
    for name, fn, floor, rounds in cases:
        ours, base = _median_us(fn, rounds), _median_us(floor, rounds)
        results[name] = ours
        print(f"{name:34} {ours:12.1f} {base:14.1f} {ours / base:7.1f}x")
    # A talking session: 10 appends/s from the microphone and 25 audio deltas/s from Gemini.
    per_second = 10 * results["audio append (client, 100 ms)"] + 25 * results["audio delta (Gemini, 40 ms)"]
    print(f"\naudio session: {per_second:.0f} µs of translation per second of conversation "
          f"-> about {1e6 / per_second:.0f} concurrent talking sessions per core (translation only)")
    _snapshot_cost(args.rounds)


if __name__ == "__main__":
    main()
