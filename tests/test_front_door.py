"""The front door with a raw WebSocket client: handshake refusals, bad input, upstream failures, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import refusal, serve

MASTER_KEY = "sk-livegate-front-door"
GEMINI_KEY = "AIza-front-door-upstream-secret"


def _config(api_base: str, **settings: Any) -> Any:
    return parse_config({
        "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-live-2.5-flash", "api_key": GEMINI_KEY, "api_base": api_base}}],
        "general_settings": {"master_key": MASTER_KEY},
        "livegate_settings": settings,
    })


@pytest.fixture
async def sim() -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator(chunk_delay=0, api_key=GEMINI_KEY) as simulator:
        yield simulator


@pytest.fixture
async def base(sim: GeminiLiveSimulator) -> AsyncIterator[str]:
    async with serve(create_app(_config(sim.url, max_client_frame_bytes=64 * 1024))) as url:
        yield url.replace("http", "ws")


def _connect(base: str, *, key: str | None = MASTER_KEY, model: str = "gpt-realtime", path: str = "/v1/realtime",
             **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return connect(f"{base}{path}?model={model}", additional_headers=headers, max_size=None, **kwargs)


async def _until(ws: ClientConnection, event_type: str, seen: list[str] | None = None) -> dict[str, Any]:
    while True:
        frame = await asyncio.wait_for(ws.recv(), 5)
        if seen is not None:
            seen.append(frame)
        event = json.loads(frame)
        if event["type"] == event_type:
            return event


async def _text_turn(ws: ClientConnection, seen: list[str] | None = None) -> str:
    await ws.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "still there?"}]}}))
    await ws.send(json.dumps({"type": "response.create"}))
    done = await _until(ws, "response.done", seen)
    return done["response"]["output"][0]["content"][0]["transcript"]


@pytest.mark.parametrize(("key", "model", "status", "code"), [
    (None, "gpt-realtime", 401, "invalid_api_key"),
    ("sk-wrong", "gpt-realtime", 401, "invalid_api_key"),
    (MASTER_KEY, "gpt-unknown", 404, "model_not_found"),
    (MASTER_KEY, "", 400, "missing_model"),
    (MASTER_KEY, "gpt-realtime&intent=quicksilver", 400, "invalid_intent"),
])
async def test_refused_at_the_handshake(base: str, sim: GeminiLiveSimulator, key: str | None, model: str,
                                        status: int, code: str) -> None:
    got, error = await refusal(_connect(base, key=key, model=model))
    assert got == status and error["code"] == code
    assert sim.sessions == [], "no upstream connection is opened for a refused client"


async def test_browser_subprotocol_key_and_beta(base: str) -> None:
    protocols = ["realtime", f"openai-insecure-api-key.{MASTER_KEY}", "openai-beta.realtime-v1"]
    async with _connect(base, key=None, path="/realtime", subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime", "the protocol carrying the key is never echoed"
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created" and "modalities" in created["session"], "beta dialect"


async def test_bad_input_gets_errors_and_the_session_goes_on(base: str) -> None:
    async with _connect(base) as ws:
        await _until(ws, "session.created")
        cases = [
            ("this is not json", "invalid_json", None, None),
            (json.dumps([1, 2]), "invalid_type", None, None),
            (json.dumps({"type": "response.explode", "event_id": "e1"}), "invalid_value", "type", "e1"),
            (json.dumps({"type": "input_audio_buffer.append", "event_id": "e2"}), "missing_required_parameter",
             "audio", "e2"),
            (json.dumps({"type": "input_audio_buffer.append", "event_id": "e3", "audio": 7}), "invalid_type",
             "audio", "e3"),
            (json.dumps({"type": "session.update", "event_id": "e4", "session": {"type": "realtime", "voicee": "x"}}),
             "unknown_parameter", "session.voicee", "e4"),
            (json.dumps({"type": "input_audio_buffer.append", "event_id": "e5", "audio": "A" * 70_000}),
             "message_too_large", None, None),
            (json.dumps({"type": "conversation.item.delete", "event_id": "e6", "item_id": "x"}),
             "invalid_value", "item_id", "e6"),
            (json.dumps({"type": "output_audio_buffer.clear", "event_id": "e7"}), "unsupported_event", "type", "e7"),
        ]
        for frame, code, param, event_id in cases:
            await ws.send(frame)
            error = (await _until(ws, "error"))["error"]
            assert (error["code"], error.get("param"), error.get("event_id")) == (code, param, event_id), frame[:60]
            assert error["message"]
        assert "You said: still there?" in await _text_turn(ws)


async def test_binary_client_frames_are_accepted(base: str) -> None:
    async with _connect(base) as ws:
        await _until(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}).encode())
        assert (await _until(ws, "session.updated"))["type"] == "session.updated"


async def test_upstream_key_never_reaches_the_client(base: str, sim: GeminiLiveSimulator) -> None:
    seen: list[str] = []
    async with _connect(base) as ws:
        await _text_turn(ws, seen)
    assert sim.sessions[0].headers["x-goog-api-key"] == GEMINI_KEY, "the server-side key is injected"
    assert all(GEMINI_KEY not in frame and MASTER_KEY not in frame for frame in seen)


async def test_unreachable_upstream_is_an_error_and_close_1014() -> None:
    async with serve(create_app(_config("ws://127.0.0.1:9"))) as url, _connect(url.replace("http", "ws")) as ws:
        await _until(ws, "session.created")
        await ws.send(json.dumps({"type": "response.create"}))
        error = await _until(ws, "error")
        assert error["error"]["code"] == "upstream_unavailable" and error["error"]["type"] == "server_error"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1014


@contextlib.asynccontextmanager
async def _through_fake_upstream(handler: Any) -> AsyncIterator[ClientConnection]:
    """A client connected to livegate, whose Gemini is `handler` (a websockets server handler)."""
    async with ws_serve(handler, "127.0.0.1", 0) as fake:
        port = fake.sockets[0].getsockname()[1]
        async with serve(create_app(_config(f"ws://127.0.0.1:{port}"))) as url, \
                _connect(url.replace("http", "ws")) as ws:
            yield ws


async def test_upstream_close_is_reported_with_its_code() -> None:
    async def close_after_setup(ws: Any) -> None:
        await ws.recv()
        await ws.send(json.dumps({"setupComplete": {}}))
        await ws.recv()
        await ws.close(1011, "Deadline expired")

    async with _through_fake_upstream(close_after_setup) as ws:
        await ws.send(json.dumps({"type": "response.create", "event_id": "r1"}))
        error = await _until(ws, "error")
        assert error["error"]["code"] == "upstream_closed"
        assert "1011" in error["error"]["message"] and "Deadline expired" in error["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1014


async def test_response_done_without_usage_is_not_held_forever() -> None:
    """Gemini ends the turn and never reports usage: response.done still arrives (the pump's idle timer)."""
    async def no_usage(ws: Any) -> None:
        await ws.recv()
        await ws.send(json.dumps({"setupComplete": {}}).encode())
        async for message in ws:
            if "turnComplete" in message:  # a native-audio model's words for a text session: its transcript
                await ws.send(json.dumps({"serverContent": {"outputTranscription": {"text": "hi"}}}).encode())
                await ws.send(json.dumps({"serverContent": {"turnComplete": True}}).encode())

    async with _through_fake_upstream(no_usage) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        done = await _until(ws, "response.done")
        assert done["response"]["status"] == "completed" and "usage" not in done["response"]


async def test_session_log_line_has_tokens_and_no_secrets(base: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    async with _connect(base) as ws:
        await _text_turn(ws)
    for _ in range(50):  # the server logs when its side of the session has wound down
        if any("session_end" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    line = next(r.getMessage() for r in caplog.records if "session_end" in r.getMessage())
    record = json.loads(line.split(" ", 1)[1])
    assert record["model"] == "gpt-realtime" and record["tokens"]["total_tokens"] > 0
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert GEMINI_KEY not in everything and MASTER_KEY not in everything


async def test_a_failing_upstream_reader_closes_the_client(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while handling a Gemini frame must end in a 1011 close, never in a client left waiting."""
    from livegate.translation.translator import Translator

    original = Translator.from_upstream

    def explode(self: Translator, frame: Any) -> Any:
        if b"modelTurn" in (frame if isinstance(frame, bytes) else str(frame).encode()):
            raise RuntimeError("injected failure")
        return original(self, frame)

    monkeypatch.setattr(Translator, "from_upstream", explode)
    async with _connect(base) as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1011
