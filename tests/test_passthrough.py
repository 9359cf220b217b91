"""Native passthrough routes, driven over loopback: Gemini Live over WebSocket (Vertex AI and AI Studio)
with raw websockets clients and the real google-genai SDK (over TLS), and the Vertex REST passthrough with
httpx. Google's side is the Gemini Live simulator, a byte-exact recording endpoint, a local OAuth token
endpoint (real google-auth JWT exchange) and a fake Vertex REST server (tests/fakes/google.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml
from google import genai
from starlette.responses import JSONResponse, Response, StreamingResponse
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livegate.config import DEFAULT_CONFIG_TEXT, parse_config
from livegate.mapping import Mappings, load_mappings
from livegate.server import create_app
from livegate.server.passthrough import live
from livegate.simulator import GeminiLiveSimulator
from livegate.translation.usage import UsageLedger
from tests.fakes import ServedApp, serve_app
from tests.fakes.google import (
    FakeTokenEndpoint,
    FakeVertexRest,
    RecordingLiveUpstream,
    generate_content_response,
    tls_files,
)

MODEL = "gemini-2.0-flash-live-001"  # answers in TEXT (mappings/models.yaml); 2.5 would close with 1007
KEY = "sk-livegate-test"
PREFIX = "[livegate simulator]"
AUTH = {"x-goog-api-key": KEY}
@pytest.fixture
async def sim() -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator() as simulator:
        yield simulator


def vertex_config(api_base: str, credentials: Path | str, **params: Any) -> dict[str, Any]:
    entry = {"model": f"vertex_ai/{MODEL}", "vertex_project": "proj", "vertex_location": "europe-west4",
             "vertex_credentials": str(credentials), "api_base": api_base, **params}
    return {"model_list": [{"model_name": "live", "litellm_params": entry}], "general_settings": {"master_key": KEY}}


@functools.cache
def mappings() -> Mappings:
    return load_mappings()  # compiled once for the module: the tests here are about the gateway around it


@asynccontextmanager
async def gateway(config: dict[str, Any], **tls: Any) -> AsyncIterator[ServedApp]:
    app = create_app(parse_config(config), mappings(), simulator_chunk_delay=0)
    async with serve_app(app, **tls) as served:
        yield served


def setup(model: str = "live", **extra: Any) -> str:
    return json.dumps({"setup": {"model": model, "generationConfig": {"responseModalities": ["TEXT"]}, **extra}})


def user_text(text: str) -> str:
    return json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}})


async def read_turn(ws: Any) -> list[dict[str, Any]]:
    """Frames up to and including the one holding usageMetadata."""
    frames = []
    async with asyncio.timeout(5):
        while True:
            frames.append(json.loads(await ws.recv()))
            if "usageMetadata" in frames[-1]:
                return frames


async def closed_with(served: ServedApp, path: str, first: str | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Connect, send `first`, and return the close code and reason livegate answers with."""
    async with websockets.connect(served.ws_url + path, additional_headers=headers or AUTH) as ws:
        if first is not None:
            await ws.send(first)
        async with asyncio.timeout(5):  # never a hang
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


def log_line(caplog: pytest.LogCaptureFixture, prefix: str) -> dict[str, Any]:
    record = next(r for r in caplog.records if r.getMessage().startswith(prefix + " "))
    return json.loads(record.getMessage().split(" ", 1)[1])


# --- Vertex AI Live passthrough --------------------------------------------------------------------------


async def test_vertex_live_session(sim: GeminiLiveSimulator, sa_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(vertex_config(sim.url, sa_file)) as served, websockets.connect(
            served.ws_url + "/v1/vertex-ai/live", additional_headers=AUTH) as ws:
        await ws.send(setup("live"))
        assert json.loads(await ws.recv()) == {"setupComplete": {"sessionId": "sim-session-1"}}
        await ws.send(user_text("hello"))
        frames = await read_turn(ws)
        text = "".join(p.get("text", "") for f in frames
                       for p in f.get("serverContent", {}).get("modelTurn", {}).get("parts", []))
        assert text == f"{PREFIX} You said: hello"
        await ws.send(user_text("again"))
        await read_turn(ws)

    (session,) = sim.sessions
    assert session.path == "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
    assert session.headers["authorization"] == "Bearer ya29.fake-1"
    assert KEY not in json.dumps(session.headers)  # the livegate key stays at the gateway
    assert session.received[0]["setup"]["model"] == (
        f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}")
    logged = log_line(caplog, "passthrough_session_end")
    assert logged["route"] == "vertex_ai/live" and logged["model"] == "live" and logged["close_code"] == 1000
    assert (logged["project"], logged["location"]) == ("proj", "europe-west4")
    tokens = logged["tokens"]
    assert tokens["output_by_modality"]["TEXT"] == tokens["output_tokens"] > 0  # Vertex: candidatesTokenCount
    assert tokens["input_by_modality"]["TEXT"] == tokens["input_tokens"] > 0
    assert tokens["total_tokens"] == tokens["input_tokens"] + tokens["output_tokens"]
    assert "ya29." not in caplog.text and KEY not in caplog.text


async def test_frames_are_forwarded_byte_exact_in_both_directions(sa_file: Path) -> None:
    async with RecordingLiveUpstream(setup_reply="{ \"setupComplete\" : {} }") as upstream, \
            gateway(vertex_config(upstream.url, sa_file)) as served, \
            websockets.connect(served.ws_url + "/vertex_ai/live", additional_headers=AUTH) as ws:
        first = f'{{"setup":{{"model":"projects/p/locations/l/publishers/google/models/{MODEL}"}}}}'
        await ws.send(first.encode())  # already a full path: forwarded untouched, as a binary frame
        assert await ws.recv() == "{ \"setupComplete\" : {} }"  # text stays text
        odd = '{"realtime_input" :{"audio": {"data": "_9g=", "mime_type": "audio/pcm;rate=16000"}}}  '
        await ws.send(odd)
        assert await ws.recv() == odd
        await ws.send(odd.encode())
        assert await ws.recv() == odd.encode()  # binary stays binary
    assert upstream.frames == [first.encode(), odd, odd.encode()]


@pytest.mark.parametrize(("client_model", "expected"), [
    ("live", f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}"),
    (MODEL, f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}"),
    (f"models/{MODEL}", f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}"),
    (f"publishers/google/models/{MODEL}", f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}"),
    (f"projects/other/locations/us-east1/publishers/google/models/{MODEL}",
     f"projects/other/locations/us-east1/publishers/google/models/{MODEL}"),
])
async def test_setup_model_completed(client_model: str, expected: str, sa_file: Path) -> None:
    async with RecordingLiveUpstream() as upstream, gateway(vertex_config(upstream.url, sa_file)) as served, \
            websockets.connect(served.ws_url + "/vertex_ai/live", additional_headers=AUTH) as ws:
        await ws.send(setup(client_model))
        await ws.recv()
    assert json.loads(upstream.frames[0])["setup"] == {"model": expected,
                                                       "generationConfig": {"responseModalities": ["TEXT"]}}


async def test_project_and_location_from_query_with_default_vertex_config(sim: GeminiLiveSimulator,
                                                                          sa_file: Path) -> None:
    # A model listed for AI Studio may be reached on Vertex with default_vertex_config credentials.
    config = {"model_list": [{"model_name": MODEL, "litellm_params": {"model": f"gemini/{MODEL}", "api_key": "x"}}],
              "litellm_settings": {"default_vertex_config": {"vertex_credentials": str(sa_file),
                                                             "api_base": sim.url}},
              "general_settings": {"master_key": KEY}}
    async with gateway(config) as served:
        path = "/vertex_ai/live?project_id=query-proj&location=asia-east1"
        async with websockets.connect(served.ws_url + path, additional_headers=AUTH) as ws:
            await ws.send(setup(MODEL))
            await ws.recv()
        assert sim.sessions[0].received[0]["setup"]["model"] == (
            f"projects/query-proj/locations/asia-east1/publishers/google/models/{MODEL}")

        code, reason = await closed_with(served, "/vertex_ai/live", setup(MODEL))  # no project anywhere
        assert code == 4002 and "project id not provided" in reason

        for bad in ("?location=evil.example%2Fx%23", "?project_id=a%2Fb"):
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(served.ws_url + "/vertex_ai/live" + bad, additional_headers=AUTH)
            assert refused.value.response.status_code == 400
    assert len(sim.sessions) == 1


@pytest.mark.parametrize(("case", "reason"), [
    ("missing", "Vertex credentials file not found: "),
    ("directory", "Vertex credentials file cannot be read (Is a directory): "),
    ("garbage", "are not valid JSON"),
])
async def test_unusable_credentials_close_4001(case: str, reason: str, tmp_path: Path, sim: GeminiLiveSimulator,
                                               tokens: FakeTokenEndpoint) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{ not json")
    source = {"missing": tmp_path / "missing.json", "directory": tmp_path, "garbage": garbage}[case]
    async with gateway(vertex_config(sim.url, source)) as served:
        code, text = await closed_with(served, "/vertex_ai/live", setup())
    assert code == 4001 and reason in text
    assert not sim.sessions and not tokens.grants


async def test_rejected_credentials_close_4001(sim: GeminiLiveSimulator, sa_file: Path,
                                               tokens: FakeTokenEndpoint) -> None:
    tokens.fail = (400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    async with gateway(vertex_config(sim.url, sa_file)) as served:
        code, reason = await closed_with(served, "/vertex_ai/live", setup())
    assert code == 4001 and reason.startswith("Google rejected the Vertex credentials (invalid_grant: Invalid JWT")


async def test_no_credentials_configured_close_4001(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth.compute_engine._metadata as metadata

    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setattr(metadata, "is_on_gce", lambda *a, **k: False)
    config = {"model_list": [{"model_name": "live", "litellm_params": {"model": f"vertex_ai/{MODEL}",
                                                                        "vertex_project": "p"}}]}
    async with gateway(config) as served:
        code, reason = await closed_with(served, "/vertex_ai/live", setup(), headers={})
    assert code == 4001 and "not configured" in reason


async def test_expired_token_is_refreshed_between_sessions(sim: GeminiLiveSimulator, sa_file: Path,
                                                           tokens: FakeTokenEndpoint) -> None:
    tokens.expires_in = 60  # within google-auth's refresh threshold: the next session needs a new token
    async with gateway(vertex_config(sim.url, sa_file)) as served:
        for _ in range(2):
            async with websockets.connect(served.ws_url + "/vertex_ai/live", additional_headers=AUTH) as ws:
                await ws.send(setup())
                await ws.recv()
    assert [s.headers["authorization"] for s in sim.sessions] == ["Bearer ya29.fake-1", "Bearer ya29.fake-2"]


async def test_models_outside_the_list_are_refused(sim: GeminiLiveSimulator, sa_file: Path) -> None:
    config = vertex_config(sim.url, sa_file)
    config["model_list"].append({"model_name": "sim", "livegate_params": {"model": "simulator/x",
                                                                          "api_base": sim.url}})
    async with gateway(config) as served:
        code, reason = await closed_with(served, "/vertex_ai/live", setup("gemini-3.1-flash-live-preview"))
        assert code == 4003 and "not available" in reason
        code, reason = await closed_with(served, "/gemini/live", setup("live"))
        assert code == 4003 and "Vertex AI" in reason
    assert not sim.sessions


async def test_handshake_and_setup_errors(sim: GeminiLiveSimulator, sa_file: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "SETUP_TIMEOUT", 0.2)
    async with gateway(vertex_config(sim.url, sa_file)) as served:
        for headers in ({}, {"x-goog-api-key": "wrong"}):
            with pytest.raises(InvalidStatus) as refused:
                await websockets.connect(served.ws_url + "/vertex_ai/live", additional_headers=headers)
            assert refused.value.response.status_code == 401
            assert b"API key" in refused.value.response.body
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(served.ws_url + "/vertex_ai/live/somewhere", additional_headers=AUTH)
        assert refused.value.response.status_code == 404
        # any of livegate's key headers works
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"x-litellm-api-key": KEY}):
            code, _ = await closed_with(served, "/vertex_ai/live", '{"clientContent": {}}', headers)
            assert code == 1007
        assert (await closed_with(served, "/vertex_ai/live", "not json"))[0] == 1007
        assert (await closed_with(served, "/vertex_ai/live", '{"setup": {}}'))[0] == 1007
        code, reason = await closed_with(served, "/vertex_ai/live")  # says nothing at all
        assert code == 1008 and "no setup" in reason
    assert not sim.sessions


async def test_upstream_close_is_relayed(sa_file: Path) -> None:
    async with RecordingLiveUpstream() as upstream, gateway(vertex_config(upstream.url, sa_file)) as served:
        upstream.close_on, upstream.close_code, upstream.close_reason = "bye", 1011, "Deadline expired"
        async with websockets.connect(served.ws_url + "/vertex_ai/live", additional_headers=AUTH) as ws:
            await ws.send(setup())
            await ws.recv()
            await ws.send("bye")
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    await ws.recv()
        assert (ws.close_code, ws.close_reason) == (1011, "Deadline expired")


async def test_simulator_validation_close_is_relayed(sim: GeminiLiveSimulator, sa_file: Path) -> None:
    async with gateway(vertex_config(sim.url, sa_file)) as served, websockets.connect(
            served.ws_url + "/vertex_ai/live", additional_headers=AUTH) as ws:
        await ws.send(setup())
        await ws.recv()
        await ws.send('{"bogus": {}}')
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
    assert ws.close_code == 1007 and ws.close_reason == sim.sessions[0].close_reason


async def test_unreachable_upstream_closes_1014(sa_file: Path) -> None:
    async with RecordingLiveUpstream() as upstream:
        dead = upstream.url
    async with gateway(vertex_config(dead, sa_file)) as served:
        code, reason = await closed_with(served, "/vertex_ai/live", setup())
    assert code == 1014 and "Vertex AI is unreachable" in reason


# --- AI Studio Live passthrough --------------------------------------------------------------------------


async def test_gemini_live_injects_the_server_api_key(sim: GeminiLiveSimulator) -> None:
    config = {"model_list": [{"model_name": "flash", "litellm_params": {
        "model": f"gemini/{MODEL}", "api_key": "AIza-server-key", "api_base": sim.url}}],
        "general_settings": {"master_key": KEY}}
    async with gateway(config) as served, websockets.connect(
            served.ws_url + "/v1/gemini/live", additional_headers=AUTH) as ws:
        await ws.send(setup("flash"))
        await ws.recv()
        await ws.send(user_text("hi"))
        await read_turn(ws)
    (session,) = sim.sessions
    assert session.path == "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    assert session.headers["x-goog-api-key"] == "AIza-server-key"
    assert session.received[0]["setup"]["model"] == f"models/{MODEL}"


async def test_gemini_live_on_the_built_in_simulator_config() -> None:
    async with gateway(yaml.safe_load(DEFAULT_CONFIG_TEXT)) as served, websockets.connect(
            served.ws_url + "/gemini/live") as ws:  # no master key: open, as /v1/realtime is
        # The built-in config serves every name with the simulator acting as gemini-3.8-live: AUDIO only.
        await ws.send(setup("any-model", generationConfig={"responseModalities": ["AUDIO"]}))
        assert "setupComplete" in json.loads(await ws.recv())
        await ws.send(user_text("hi"))
        assert any("usageMetadata" in f for f in await read_turn(ws))


# --- usage accounting ------------------------------------------------------------------------------------


def usage(prompt: int, output: int, spelling: str = "candidates") -> dict[str, Any]:
    return {"usageMetadata": {"promptTokenCount": prompt, f"{spelling}TokenCount": output,
                              "totalTokenCount": prompt + output,
                              "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": prompt}],
                              f"{spelling}TokensDetails": [{"modality": "AUDIO", "tokenCount": output}]}}


@pytest.mark.parametrize("spelling", ["candidates", "response"])
@pytest.mark.parametrize("placement", ["with_turn_complete", "after_turn_complete"])
def test_usage_meter_counts_each_turn_once(spelling: str, placement: str) -> None:
    meter = UsageLedger()
    model_turn = {"serverContent": {"modelTurn": {"parts": [{"text": 'say "modelTurn"'}]}}}
    for prompt, output in ((10, 20), (1, 2)):
        meter.observe(json.dumps(model_turn).encode())
        meter.observe(json.dumps({**usage(prompt // 2, output // 2, spelling)}))  # an early, partial report
        if placement == "with_turn_complete":
            meter.observe(json.dumps({"serverContent": {"turnComplete": True}, **usage(prompt, output, spelling)}))
        else:
            meter.observe(b'{"serverContent": {"turnComplete": true}}')
            meter.observe(json.dumps(usage(prompt, output, spelling)).encode())
    meter.observe(json.dumps({"toolCall": {"functionCalls": []}, **usage(100, 0, spelling)}))
    meter.commit()
    totals = meter.total.summary()
    assert (totals["input_tokens"], totals["output_tokens"], totals["total_tokens"]) == (111, 22, 133)
    assert totals["input_by_modality"] == {"AUDIO": 111} and totals["output_by_modality"] == {"AUDIO": 22}


# --- the real google-genai SDK, over TLS -----------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    files = tls_files(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(files.cert))  # google-genai builds its TLS context from it
    return {"certfile": files.cert, "keyfile": files.key}


async def sdk_turn(client: genai.Client, model: str) -> tuple[str, Any]:
    async with client.aio.live.connect(model=model, config={"response_modalities": ["TEXT"]}) as session:
        await session.send_client_content(turns={"role": "user", "parts": [{"text": "Hello SDK"}]})
        messages = [m async for m in session.receive()]
    return "".join(m.text or "" for m in messages), messages[-1].usage_metadata


async def test_google_genai_vertex_client(sim: GeminiLiveSimulator, sa_file: Path, tls: dict[str, Path],
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with gateway(vertex_config(sim.url, sa_file), **tls) as served:
        # Vertex "express mode" spelling: the livegate key travels as x-goog-api-key, the model without project
        client = genai.Client(vertexai=True, api_key=KEY, http_options={"base_url": served.url + "/vertex_ai/live"})
        text, usage = await sdk_turn(client, MODEL)
    assert text == f"{PREFIX} You said: Hello SDK"
    assert usage.response_token_count > 0  # the SDK's name for Vertex's candidatesTokenCount
    (session,) = sim.sessions
    assert session.path == "/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"  # SDK's version
    assert session.headers["authorization"] == "Bearer ya29.fake-1" and "x-goog-api-key" not in session.headers
    assert session.received[0]["setup"]["model"] == (
        f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}")
    assert log_line(caplog, "passthrough_session_end")["tokens"]["output_tokens"] == usage.response_token_count


async def test_google_genai_vertex_proxy_mode(sim: GeminiLiveSimulator, sa_file: Path, tls: dict[str, Path]) -> None:
    # No project, location or key in the client: the URL is used verbatim, the key goes in a header.
    config = {"model_list": [{"model_name": MODEL, "litellm_params": {"model": f"gemini/{MODEL}", "api_key": "x"}}],
              "litellm_settings": {"default_vertex_config": {"vertex_credentials": str(sa_file), "api_base": sim.url}},
              "general_settings": {"master_key": KEY}}
    async with gateway(config, **tls) as served:
        client = genai.Client(vertexai=True, http_options={
            "base_url": served.ws_url + "/vertex_ai/live?project_id=qp&location=us-east4", "headers": AUTH})
        text, _ = await sdk_turn(client, MODEL)
    assert text == f"{PREFIX} You said: Hello SDK"
    assert sim.sessions[0].received[0]["setup"]["model"] == (
        f"projects/qp/locations/us-east4/publishers/google/models/{MODEL}")


async def test_google_genai_ai_studio_client(sim: GeminiLiveSimulator, tls: dict[str, Path]) -> None:
    config = {"model_list": [{"model_name": MODEL, "litellm_params": {
        "model": f"gemini/{MODEL}", "api_key": "AIza-server-key", "api_base": sim.url}}],
        "general_settings": {"master_key": KEY}}
    async with gateway(config, **tls) as served:
        client = genai.Client(api_key=KEY, http_options={"base_url": served.url + "/gemini/live"})
        text, _ = await sdk_turn(client, MODEL)
    assert text == f"{PREFIX} You said: Hello SDK"
    assert sim.sessions[0].headers["x-goog-api-key"] == "AIza-server-key"


# --- Vertex REST passthrough -----------------------------------------------------------------------------

GENERATE = f"/vertex_ai/v1/projects/proj/locations/us-central1/publishers/google/models/{MODEL}:generateContent"


@pytest.fixture
async def rest(sa_file: Path) -> AsyncIterator[tuple[FakeVertexRest, httpx.AsyncClient]]:
    fake = FakeVertexRest()
    async with serve_app(fake) as google_side:
        config = {"model_list": [
            {"model_name": MODEL, "litellm_params": {"model": f"vertex_ai/{MODEL}"}},
            {"model_name": "my-flash", "litellm_params": {"model": "vertex_ai/gemini-2.5-flash"}},
            {"model_name": "sim", "livegate_params": {"model": "simulator/x", "api_base": "ws://127.0.0.1:9"}},
        ], "litellm_settings": {"default_vertex_config": {
            "vertex_project": "proj", "vertex_credentials": str(sa_file), "api_base": google_side.url,
            "discovery_api_base": google_side.url + "/discovery-root"}},
            "general_settings": {"master_key": KEY}}
        async with gateway(config) as served, httpx.AsyncClient(base_url=served.url, timeout=10) as client:
            yield fake, client


async def test_rest_request_is_forwarded_with_credentials(rest: tuple[FakeVertexRest, httpx.AsyncClient],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake, client = rest
    body = b'{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}'
    response = await client.post(GENERATE + "?alt=json&x=%2F", content=body, headers={
        "Authorization": f"Bearer {KEY}", "content-type": "application/json", "x-goog-api-client": "test/1"})
    assert response.status_code == 200
    assert response.json()["candidates"][0]["content"]["parts"][0]["text"] == "ok"
    (seen,) = fake.requests
    assert (seen.method, seen.query, seen.body) == ("POST", "alt=json&x=%2F", body)
    assert seen.path == GENERATE.removeprefix("/vertex_ai")
    assert seen.headers["authorization"] == "Bearer ya29.fake-1" and seen.headers["x-goog-api-client"] == "test/1"
    assert KEY not in json.dumps(seen.headers)
    logged = log_line(caplog, "passthrough_request_end")
    assert logged["status"] == 200 and logged["model"] == MODEL
    assert logged["tokens"]["output_by_modality"] == {"TEXT": 5} and logged["tokens"]["input_tokens"] == 3


async def test_rest_stream_arrives_incrementally(rest: tuple[FakeVertexRest, httpx.AsyncClient],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake, client = rest
    first_seen = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        yield b'data: {"candidates": [{"content": {"parts": [{"text": "one"}]}}]}\r\n\r\n'
        await asyncio.wait_for(first_seen.wait(), 5)  # the upstream is not finished before the client has chunk 1
        yield ("data: " + json.dumps(generate_content_response("two", 4, 6)) + "\r\n\r\n").encode()

    fake.respond = lambda _: StreamingResponse(events(), media_type="text/event-stream")
    path = GENERATE.replace(":generateContent", ":streamGenerateContent") + "?alt=sse"
    chunks = []
    async with client.stream("POST", path, json={"contents": []}, headers={"x-litellm-api-key": KEY}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            first_seen.set()
    body = b"".join(chunks)
    assert b'"one"' in chunks[0] and b'"two"' not in chunks[0] and b'"two"' in body
    tokens = log_line(caplog, "passthrough_request_end")["tokens"]
    assert (tokens["input_tokens"], tokens["output_tokens"]) == (4, 6)  # the last chunk's running totals


async def test_rest_errors_are_relayed_verbatim(rest: tuple[FakeVertexRest, httpx.AsyncClient]) -> None:
    fake, client = rest
    error = b'{\n  "error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}\n}\n'
    def respond(_: Any) -> Response:
        response = Response(error, status_code=429, media_type="application/json", headers={"retry-after": "7"})
        response.raw_headers += [(b"x-goog-debug", b"a"), (b"x-goog-debug", b"b")]
        return response

    fake.respond = respond
    response = await client.post(GENERATE, content=b"{}", headers=AUTH)
    assert (response.status_code, response.content, response.headers["retry-after"]) == (429, error, "7")
    assert response.headers.get_list("x-goog-debug") == ["a", "b"]  # repeated headers stay separate


async def test_rest_routes_and_refusals(rest: tuple[FakeVertexRest, httpx.AsyncClient]) -> None:
    fake, client = rest
    fake.respond = lambda request: JSONResponse({"method": request.method})
    # a model_name in the path becomes its entry's model id
    await client.post(GENERATE.replace(MODEL, "my-flash"), content=b"{}", headers=AUTH)
    assert fake.requests[-1].path.endswith("/models/gemini-2.5-flash:generateContent")
    # methods, paths without a model, the other prefix, and the discovery engine
    response = await client.delete("/vertex-ai/v1/projects/proj/locations/us-central1/endpoints/123", headers=AUTH)
    assert response.json() == {"method": "DELETE"}
    await client.get("/vertex_ai/discovery/v1/projects/proj/locations/global/collections", headers=AUTH)
    assert fake.requests[-1].path == "/discovery-root/v1/projects/proj/locations/global/collections"

    assert (await client.post(GENERATE, content=b"{}")).status_code == 401
    assert (await client.post(GENERATE, content=b"{}", headers={"x-goog-api-key": "nope"})).status_code == 401
    refused = await client.post(GENERATE.replace(MODEL, "gemini-1.0-ultra"), content=b"{}", headers=AUTH)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert (await client.post(GENERATE.replace(MODEL, "sim"), content=b"{}", headers=AUTH)).status_code == 403
    bad = GENERATE.replace("locations/us-central1", "locations/evil.example%23")
    assert (await client.post(bad, content=b"{}", headers=AUTH)).status_code == 400
    assert len(fake.requests) == 3


async def test_rest_without_credentials_and_unreachable(tmp_path: Path) -> None:
    config = {"model_list": [], "litellm_settings": {"default_vertex_config": {
        "vertex_credentials": str(tmp_path / "missing.json"), "api_base": "http://127.0.0.1:9"}}}
    async with gateway(config) as served, httpx.AsyncClient(base_url=served.url) as client:
        response = await client.get("/vertex_ai/v1/projects/p/locations/us-central1/endpoints")
        assert response.status_code == 500 and "not found" in response.json()["error"]["message"]
