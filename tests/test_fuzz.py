"""Fuzzing the front doors (issues 12 and 18): hypothesis-generated client events of every type (random
fields, and near-valid ones generated from the openai SDK's types in both dialects), and passthrough first
frames, against a running livegate. Bounded for CI (a few hundred examples); a long campaign:
`LIVEGATE_FUZZ_SECONDS=600 pytest -s tests/test_fuzz.py -k schema`.

Asserted for every example: the session is never closed with 1011 (nor 1014: Gemini is never blamed for
a client's input), no traceback and no warning in the log, an `error` event for every event that is
invalid by construction, and a normal turn afterwards. Memory: distinct event types are not retained.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from livegate.config import parse_config
from livegate.mapping.expressions import make_unmade
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.translation.translator import Translator
from tests.conformance import check_client_event
from tests.fakes.google import RecordingLiveUpstream
from tests.fuzz_events import client_events
from tests.support import serve
from tests.test_passthrough import mappings

KEY = "sk-livegate-fuzz"
HEADERS = {"Authorization": f"Bearer {KEY}"}
CLIENT_TYPES = ["session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                "input_audio_buffer.clear", "output_audio_buffer.clear", "conversation.item.create",
                "conversation.item.retrieve", "conversation.item.truncate", "conversation.item.delete",
                "response.create", "response.cancel"]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True, database=None)


class Gateway:
    """livegate, the simulator and a recording Gemini endpoint, served from a thread of their own so the
    (synchronous) hypothesis examples can talk to them."""

    def __init__(self) -> None:
        self.ws_url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with GeminiLiveSimulator(chunk_delay=0) as sim, RecordingLiveUpstream() as recording:
            config = parse_config({"model_list": [
                {"model_name": "gpt-realtime", "litellm_params": {"model": "gemini/gemini-live-2.5-flash",
                                                                  "api_key": "AIza-fuzz", "api_base": sim.url}},
                {"model_name": "live", "litellm_params": {"model": "gemini/gemini-live-2.5-flash",
                                                          "api_key": "AIza-fuzz", "api_base": recording.url}},
            ], "general_settings": {"master_key": KEY},
                "livegate_settings": {"max_client_frame_bytes": 256 * 1024}})
            async with serve(create_app(config, mappings(), simulator_chunk_delay=0)) as url:
                self.ws_url = url.replace("http", "ws")
                self._ready.set()
                await self._stop.wait()

    def __enter__(self) -> Gateway:
        self._thread.start()
        assert self._ready.wait(10), "livegate did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with Gateway() as served:
        yield served


class LogProblems:
    """Records at WARNING or above, or with a traceback, from any thread, read when asked (a list filled at
    the fixture's teardown would be empty whenever a test looked at it)."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog
        self._seen = 0

    def __call__(self) -> list[str]:
        """The problems logged since the last call (so each example is judged by its own)."""
        records, self._seen = self.caplog.records[self._seen:], len(self.caplog.records)
        return [r.getMessage()[:300] for r in records if r.levelno >= logging.WARNING or r.exc_info]


@pytest.fixture
def log_problems(caplog: pytest.LogCaptureFixture) -> Iterator[LogProblems]:
    caplog.set_level(logging.INFO)
    yield LogProblems(caplog)


# --- strategies ------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=10), inner, max_size=3), max_leaves=10)
event_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def plausible_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event of a real type whose fields are anything: valid or not, livegate must answer sanely."""
    event = {"type": draw(st.sampled_from(CLIENT_TYPES)), "event_id": draw(event_ids)}
    for name in draw(st.lists(st.sampled_from(["session", "item", "audio", "response", "item_id",
                                               "previous_item_id", "content_index", "audio_end_ms"]),
                              max_size=3, unique=True)):
        event[name] = draw(values | st.text(alphabet="AB+/=", max_size=16))
    return event


KINDS = ["not json", "not an object", "unknown type", "audio not a string", "session not an object",
         "long type", "deep tool schema"]


@st.composite
def invalid_events(draw: st.DrawFn, kinds: list[str]) -> tuple[str, str | None, str]:
    """(frame, event_id echoed or None, what it is): invalid by construction, each must get an `error`."""
    event_id = draw(event_ids)
    kind = draw(st.sampled_from(kinds))
    if kind == "not json":
        return draw(st.text(max_size=30).filter(lambda t: not _is_json(t))), None, kind
    if kind == "not an object":
        return json.dumps(draw(st.lists(scalars, max_size=3) | scalars)), None, kind
    if kind == "unknown type":
        type_ = draw(st.text(min_size=1, max_size=40).filter(lambda t: t not in CLIENT_TYPES))
        return json.dumps({"type": type_, "event_id": event_id}), event_id, kind
    if kind == "long type":  # the probe: 251+ bytes crashed the validator's schema lookup (issue 7's fix)
        return json.dumps({"type": "x" * draw(st.integers(251, 5000)), "event_id": event_id}), event_id, kind
    if kind == "audio not a string":
        audio = draw(st.integers() | st.lists(scalars, max_size=2) | st.none())
        return json.dumps({"type": "input_audio_buffer.append", "audio": audio, "event_id": event_id}), event_id, kind
    if kind == "session not an object":
        return json.dumps({"type": "session.update", "session": draw(scalars), "event_id": event_id}), event_id, kind
    levels = draw(st.integers(250, 1200))  # the probe: 250-1000 levels gave 1014, 1011 or a RecursionError
    schema = '{"type": "object", "properties": {"a": ' * levels + "{}" + "}}" * levels
    frame = ('{"type": "session.update", "event_id": ' + json.dumps(event_id) + ', "session": {"type": "realtime", '
             '"tools": [{"type": "function", "name": "f", "parameters": ' + schema + "}]}}")
    return frame, event_id, kind


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --- the realtime front door -----------------------------------------------------------------------------


def _events(ws: ClientConnection, until: str, timeout: float = 5) -> list[dict[str, Any]]:
    seen = []
    while True:
        seen.append(json.loads(ws.recv(timeout)))
        if seen[-1]["type"] == until:
            return seen


CANCEL_AFTER_FUZZ = "cancel_after_fuzz"


def _normal_turn(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "after the fuzz"}]}}))
    ws.send(json.dumps({"type": "response.create"}))
    done = _events(ws, "response.done")[-1]
    assert done["response"]["status"] in ("completed", "cancelled"), done
    # the cancel sent before this turn finds no response when the fuzzed turn had not started yet (a slow
    # machine) or had ended: its refusal may come after this turn; any other error fails
    errors = [e for e in _events_until_quiet(ws) if e["type"] == "error"
              and not (e["error"].get("event_id") == CANCEL_AFTER_FUZZ
                       and e["error"]["code"] == "response_cancel_not_active")]
    assert not errors, errors


def _events_until_quiet(ws: ClientConnection, quiet: float = 0.05) -> list[dict[str, Any]]:
    seen = []
    with contextlib.suppress(TimeoutError):
        while True:
            seen.append(json.loads(ws.recv(quiet)))
    return seen


@FUZZ
@given(events=st.lists(plausible_events(), min_size=1, max_size=6), invalid=invalid_events(KINDS))
def test_fuzzed_client_events(gateway: Gateway, log_problems: LogProblems,
                              events: list[dict[str, Any]], invalid: tuple[str, str | None, str]) -> None:
    _fuzz_session(gateway, log_problems, events, invalid)


def _fuzz_session(gateway: Gateway, log_problems: LogProblems, events: list[dict[str, Any]],
                  invalid: tuple[str, str | None, str]) -> None:
    frame, event_id, kind = invalid
    with connect(gateway.ws_url + "/v1/realtime?model=gpt-realtime", additional_headers=HEADERS,
                 max_size=None) as ws:
        _events(ws, "session.created")
        try:
            ws.send(frame)
            error = _events(ws, "error")[-1]["error"]
            assert error.get("event_id") == event_id, (kind, error)
            for event in events:
                ws.send(json.dumps(event))
            _events_until_quiet(ws)
            # the session still works: plausible events may have started or refused a turn; start a fresh one
            ws.send(json.dumps({"type": "response.cancel", "event_id": CANCEL_AFTER_FUZZ}))
            _normal_turn(ws)
        except ConnectionClosed as closed:
            raise AssertionError(f"closed {closed.rcvd.code if closed.rcvd else None} after {kind}: "
                                 f"{events}") from None
    assert not log_problems()


# --- every client event type, both dialects, near-valid -------------------------------------------------

# The suite runs a bounded number of examples; a campaign sets LIVEGATE_FUZZ_SECONDS (random seeds, as many
# examples as fit in that time) and prints what it ran.
CAMPAIGN_SECONDS = float(os.environ.get("LIVEGATE_FUZZ_SECONDS") or 0)
SCHEMA_FUZZ = settings(max_examples=50 if CAMPAIGN_SECONDS else 40, deadline=None, database=None,
                       derandomize=not CAMPAIGN_SECONDS,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                              HealthCheck.data_too_large])


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_schema_fuzzed_events_in_both_dialects(gateway: Gateway, log_problems: LogProblems, dialect: str) -> None:
    """Sequences of events of every client type, generated from the SDK's types and mutated: no `server_error`,
    no close, no traceback or warning, and every event sent back conforms to the dialect's types."""
    started, ran = time.monotonic(), [0, 0]

    @SCHEMA_FUZZ
    @given(events=st.lists(client_events(dialect), min_size=1, max_size=8))
    def run(events: list[dict[str, Any]]) -> None:
        ran[0] += 1
        ran[1] += len(events)
        _schema_session(gateway, dialect, events)
        problems = log_problems()
        assert not problems, (problems, events)

    run()
    while time.monotonic() - started < CAMPAIGN_SECONDS:  # a campaign: batches with fresh random seeds
        run()
    if CAMPAIGN_SECONDS:
        print(f"\nfuzz campaign ({dialect}): {ran[0]} sessions, {ran[1]} events in "
              f"{time.monotonic() - started:.0f} s")


def _schema_session(gateway: Gateway, dialect: str, events: list[dict[str, Any]]) -> None:
    headers = {**HEADERS, **({"OpenAI-Beta": "realtime=v1"} if dialect == "beta" else {})}
    with connect(gateway.ws_url + "/v1/realtime?model=gpt-realtime", additional_headers=headers,
                 max_size=None) as ws:
        received = _events(ws, "session.created")
        try:
            for event in events:
                ws.send(json.dumps(event))
            received += _events_until_quiet(ws, 0.1)
        except ConnectionClosed as closed:
            raise AssertionError(f"closed {closed.rcvd.code if closed.rcvd else None}: {events}") from None
    internal = [e for e in received if e["type"] == "error" and e["error"].get("type") == "server_error"]
    assert not internal, (internal, events)
    for event in received:
        check_client_event(event, dialect)


# --- the passthrough first frame -------------------------------------------------------------------------

setup_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["model", "setup", "generationConfig", "tools", "x", "systemInstruction"]) | st.text(max_size=6),
    inner, max_size=3), max_leaves=12)


@st.composite
def first_frames(draw: st.DrawFn) -> str:
    setup = draw(st.dictionaries(st.sampled_from(["generationConfig", "tools", "systemInstruction", "x"]),
                                 setup_values, max_size=3))
    setup["model"] = draw(st.sampled_from(["live", "gemini-live-2.5-flash", "models/gemini-live-2.5-flash",
                                           "unlisted-model", ""]) | st.text(max_size=12) | scalars)
    text = json.dumps({"setup": setup})
    mutation = draw(st.sampled_from(["none", "duplicate", "nan", "surrogate", "deep", "truncate", "garbage"]))
    if mutation == "duplicate":
        text = text.replace('{"setup": {', '{"setup": {"model": "unlisted-model", ', 1)
    elif mutation == "nan":
        text = text.replace('{"setup": {', '{"setup": {"temperature": NaN, ', 1)
    elif mutation == "surrogate":
        text = text.replace('{"setup": {', '{"setup": {"x": "\\udc80", ', 1)
    elif mutation == "deep":
        levels = draw(st.integers(60, 20_000))
        text = text.replace('{"setup": {', '{"setup": {"x": ' + "[" * levels + "]" * levels + ", ", 1)
    elif mutation == "truncate":
        text = text[:draw(st.integers(0, max(0, len(text) - 1)))]
    elif mutation == "garbage":
        text += draw(st.text(min_size=1, max_size=5))
    return text


@FUZZ
@given(first=first_frames(), binary=st.booleans())
def test_fuzzed_passthrough_first_frame(gateway: Gateway, log_problems: LogProblems, first: str,
                                        binary: bool) -> None:
    with connect(gateway.ws_url + "/gemini/live", additional_headers={"x-goog-api-key": KEY}, max_size=None) as ws:
        ws.send(first.encode() if binary else first)
        try:
            reply = ws.recv(5)  # accepted: Gemini's setupComplete is relayed
            assert "setupComplete" in (reply if isinstance(reply, str) else reply.decode())
        except ConnectionClosed:
            assert ws.close_code in (1007, 4003), (ws.close_code, ws.close_reason, first[:200])
    assert not log_problems()


# --- memory ----------------------------------------------------------------------------------------------


def test_distinct_event_types_are_not_retained() -> None:
    """The probe: every distinct `type` was kept forever (~385 bytes each) by the validator's per-type cache,
    shared by all sessions (issue 7's fix)."""
    translator = Translator(mappings(), context={"model": "m", "setup_model": "models/m", "backend": "aistudio"})
    for i in range(200):  # warm up
        translator.from_client(json.dumps({"type": f"warm.{i}"}))
    make_unmade(10**6)  # the mappings' Python, which a server left running in this process may still be making
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(5_000):
            out = translator.from_client(json.dumps({"type": f"fuzz.type.{i}.{'y' * 40}"}))
            assert out.client[0]["type"] == "error"
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 300_000, f"{retained} bytes kept for 5k distinct types"
