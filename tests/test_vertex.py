"""Vertex AI as an upstream of /v1/realtime: config, URLs, google-auth credentials, and the same
translation on both backends (AI Studio and Vertex), over loopback only.

Credentials go through the real google-auth: a service-account JSON with a freshly generated RSA key
whose `token_uri` is a local token endpoint that verifies the signed JWT (tests/fakes/google.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from livegate.config import ConfigError, parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.upstream import google_credentials
from livegate.upstream.base import provider_for
from livegate.upstream.google_credentials import CredentialsError, bearer_token
from livegate.upstream.vertex import VertexProvider, live_url, model_resource, vertex_host
from tests.fakes import serve_app
from tests.fakes.google import (
    FakeTokenEndpoint,
    service_account_info,
    write_authorized_user,
)

MODEL = "gemini-live-2.5-flash"
PREFIX = "[livegate simulator]"
def vertex_entry(**params: Any) -> dict[str, Any]:
    return {"model_name": "live", "litellm_params": {"model": f"vertex_ai/{MODEL}", **params}}


# --- config and URLs -------------------------------------------------------------------------------------


def test_hosts_and_urls() -> None:
    assert vertex_host("us-central1") == "us-central1-aiplatform.googleapis.com"
    assert vertex_host("global") == "aiplatform.googleapis.com"
    assert vertex_host("eu") == "aiplatform.eu.rep.googleapis.com"
    assert live_url("europe-west4") == ("wss://europe-west4-aiplatform.googleapis.com"
                                        "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent")
    assert live_url("global", "v1beta1", "https://psc.example/") == (
        "wss://psc.example/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent")
    for bad in ("evil.example/x#", "US-CENTRAL1", "", "a b"):
        with pytest.raises(ValueError):
            vertex_host(bad)
    full = f"projects/p/locations/l/publishers/google/models/{MODEL}"
    assert model_resource("p", "l", MODEL) == full
    assert model_resource("p", "l", f"models/{MODEL}") == full
    assert model_resource("p", "l", f"publishers/google/models/{MODEL}") == full
    assert model_resource("x", "y", full) == full


def test_provider_from_route() -> None:
    config = parse_config({"model_list": [
        vertex_entry(vertex_project="proj", vertex_location="global"),
        {"model_name": "pinned", "litellm_params": {"model": f"vertex_ai/{MODEL}", "vertex_project": "proj",
                                                    "api_version": "v1beta1", "api_base": "http://127.0.0.1:9"}},
    ]})
    provider = provider_for(config.routes[0], config)
    assert isinstance(provider, VertexProvider) and provider.backend == "vertex"
    assert provider.url == "wss://aiplatform.googleapis.com/ws/google.cloud.aiplatform.v1.LlmBidiService/" \
                           "BidiGenerateContent"
    assert provider.setup_model() == f"projects/proj/locations/global/publishers/google/models/{MODEL}"
    pinned = provider_for(config.routes[1], config)
    assert pinned.url == "ws://127.0.0.1:9/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent"
    assert pinned.setup_model().startswith("projects/proj/locations/us-central1/")  # the default location


def test_defaults_from_litellm_settings_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_VERTEXAI_PROJECT", "env-proj")
    monkeypatch.setenv("DEFAULT_VERTEXAI_LOCATION", "asia-east1")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/etc/adc.json")
    config = parse_config({"model_list": [vertex_entry()]})
    assert (config.vertex.project, config.vertex.location, config.vertex.credentials) == (
        "env-proj", "asia-east1", "/etc/adc.json")
    assert provider_for(config.routes[0], config).setup_model().startswith("projects/env-proj/locations/asia-east1/")

    monkeypatch.setenv("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS", "/etc/default.json")
    monkeypatch.setenv("SA_JSON", '{"type": "service_account"}')
    config = parse_config({"model_list": [vertex_entry()], "litellm_settings": {"default_vertex_config": {
        "vertex_project": "cfg-proj", "vertex_location": "europe-west1", "vertex_credentials": "os.environ/SA_JSON"}}})
    assert (config.vertex.project, config.vertex.location) == ("cfg-proj", "europe-west1")
    assert config.vertex.credentials == '{"type": "service_account"}'
    assert "service_account" not in repr(config.vertex)  # inline credentials never printed


def test_missing_project_is_a_load_time_error() -> None:
    with pytest.raises(ConfigError, match=r"model_list\[1\] \('live'\): vertex_ai needs a project"):
        parse_config({"model_list": [{"model_name": "sim", "livegate_params": {"model": "simulator/x"}},
                                     vertex_entry(vertex_location="us-central1")]})
    parse_config({"model_list": [vertex_entry()],  # a default project is enough
                  "litellm_settings": {"default_vertex_config": {"vertex_project": "p"}}})


def test_reprs_hold_no_secret() -> None:
    info = json.dumps(service_account_info("http://127.0.0.1:1/token"))
    config = parse_config({"model_list": [vertex_entry(vertex_project="p", vertex_credentials=info)]})
    provider = provider_for(config.routes[0], config)
    texts = [repr(config), repr(config.routes[0]), repr(provider), repr(config.vertex),
             repr(google_credentials.BearerToken("ya29.secret", "q"))]
    assert not any("PRIVATE KEY" in t or "ya29.secret" in t for t in texts)


# --- google-auth credentials -----------------------------------------------------------------------------


async def test_service_account_signed_jwt_exchange(tokens: FakeTokenEndpoint, sa_file: Path) -> None:
    token = await bearer_token(str(sa_file))
    assert token == ("ya29.fake-1", None)
    assert token.headers() == {"Authorization": "Bearer ya29.fake-1"}
    (grant,) = tokens.grants
    # the endpoint verified the RS256 signature with the account's public key; these are its claims
    assert grant.claims["iss"] == "livegate-test@fake-project.iam.gserviceaccount.com"
    assert grant.claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
    assert await bearer_token(str(sa_file)) == ("ya29.fake-1", None)  # cached: no second exchange
    assert len(tokens.grants) == 1


async def test_token_refreshed_when_near_expiry(tokens: FakeTokenEndpoint, sa_file: Path) -> None:
    tokens.expires_in = 120  # inside google-auth's refresh threshold (3 min 45 s): stale at once
    assert (await bearer_token(str(sa_file))).token == "ya29.fake-1"
    tokens.expires_in = 3600
    assert (await bearer_token(str(sa_file))).token == "ya29.fake-2"
    assert (await bearer_token(str(sa_file))).token == "ya29.fake-2"
    assert tokens.issued == ["ya29.fake-1", "ya29.fake-2"]


async def test_failed_early_refresh_keeps_the_current_token(tokens: FakeTokenEndpoint, sa_file: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    tokens.expires_in = 120  # stale but not expired
    assert (await bearer_token(str(sa_file))).token == "ya29.fake-1"
    tokens.fail = (400, {"error": "invalid_grant", "error_description": "Account disabled."})
    assert (await bearer_token(str(sa_file))).token == "ya29.fake-1"
    assert "using the current token" in caplog.text
    tokens.expires_in = 0  # a token already past its expiry cannot be used after a failed refresh
    tokens.fail = None
    assert (await bearer_token(str(sa_file))).token == "ya29.fake-2"
    tokens.fail = (400, {"error": "invalid_grant", "error_description": "Account disabled."})
    with pytest.raises(CredentialsError, match=r"Google rejected the Vertex credentials \(invalid_grant: Account"):
        await bearer_token(str(sa_file))


async def test_one_refresh_in_flight_and_the_loop_keeps_running(tokens: FakeTokenEndpoint, sa_file: Path) -> None:
    tokens.delay = 0.3
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    results = await asyncio.gather(*(bearer_token(str(sa_file)) for _ in range(8)))
    task.cancel()
    assert {r.token for r in results} == {"ya29.fake-1"} and len(tokens.grants) == 1
    assert ticks >= 10  # the event loop was not blocked while google-auth waited for the endpoint


async def test_authorized_user_with_quota_project(tmp_path: Path, tokens: FakeTokenEndpoint,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import google.oauth2.credentials

    # google-auth ignores an authorized-user file's token_uri and always uses Google's endpoint
    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", tokens.url)
    path = write_authorized_user(tmp_path / "adc.json", tokens.url, quota_project_id="billing-proj")
    token = await bearer_token(str(path))
    assert token.headers() == {"Authorization": "Bearer ya29.fake-1", "x-goog-user-project": "billing-proj"}
    assert tokens.grants[0].grant_type == "refresh_token"


async def test_inline_json_and_adc(tokens: FakeTokenEndpoint, sa_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await bearer_token(sa_file.read_text())).token == "ya29.fake-1"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa_file))
    assert (await bearer_token(None)).token == "ya29.fake-2"  # Application Default Credentials


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "Vertex credentials file not found: "),
    ("directory", "Vertex credentials file cannot be read (Is a directory): "),
    ("garbage", "are not valid JSON: "),
    ("incomplete", "are not usable"),
    ("bad_key", "are not usable"),
    ("unknown_type", "unsupported type 'api_key'"),
])
async def test_credential_errors_name_the_problem_not_the_secret(tmp_path: Path, tokens: FakeTokenEndpoint,
                                                                 case: str, message: str) -> None:
    info = service_account_info(tokens.url)
    sources = {
        "missing": str(tmp_path / "nope.json"),
        "directory": str(tmp_path),
        "garbage": str(write_text(tmp_path / "g.json", "not json " + info["private_key"])),
        "incomplete": json.dumps({k: v for k, v in info.items() if k != "client_email"}),
        "bad_key": json.dumps({**info, "private_key": info["private_key"][:200]}),
        "unknown_type": json.dumps({**info, "type": "api_key"}),
    }
    with pytest.raises(CredentialsError) as raised:
        await asyncio.wait_for(bearer_token(sources[case]), 5)
    text = str(raised.value)
    assert message in text
    assert "PRIVATE KEY" not in text and "MII" not in text
    error = raised.value  # raised without its google-auth cause, which may quote what it was given
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert not tokens.grants


async def test_no_credentials_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth.compute_engine._metadata as metadata

    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default file
    monkeypatch.setattr(metadata, "is_on_gce", lambda *a, **k: False)
    with pytest.raises(CredentialsError, match="Vertex credentials not configured"):
        await bearer_token(None)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- /v1/realtime on both backends -----------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator() as simulator:
        yield simulator


def backend_config(backend: str, sim: GeminiLiveSimulator, sa_file: Path) -> dict[str, Any]:
    if backend == "vertex":
        params = {"model": f"vertex_ai/{MODEL}", "vertex_project": "proj", "vertex_location": "europe-west4",
                  "vertex_credentials": str(sa_file), "api_base": sim.url}
    else:
        params = {"model": f"gemini/{MODEL}", "api_key": "AIza-server-key", "api_base": sim.url}
    return {"model_list": [{"model_name": "gpt-realtime", "litellm_params": params}],
            "general_settings": {"master_key": "sk-livegate"}}


def pcm16(ms: int, rate: int = 24000, amplitude: float = 0.3) -> bytes:
    n, step = rate * ms // 1000, 2 * math.pi * 300 / rate
    return struct.pack(f"<{n}h", *(round(amplitude * 32767 * math.sin(step * i)) for i in range(n)))


async def until(ws: Any, event_type: str) -> list[dict[str, Any]]:
    events = []
    async with asyncio.timeout(10):
        while True:
            events.append(json.loads(await ws.recv()))
            if events[-1]["type"] == event_type:
                return events


@pytest.mark.parametrize("backend", ["aistudio", "vertex"])
async def test_realtime_turns_on_both_backends(backend: str, sim: GeminiLiveSimulator, sa_file: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(parse_config(backend_config(backend, sim, sa_file)), simulator_chunk_delay=0)
    async with serve_app(app) as served, websockets.connect(
            f"{served.ws_url}/v1/realtime?model=gpt-realtime",
            additional_headers={"Authorization": "Bearer sk-livegate"}) as ws:
        await until(ws, "session.created")
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                         "output_modalities": ["text"]}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        events = await until(ws, "response.done")
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == f"{PREFIX} You said: hello"
        usage = events[-1]["response"]["usage"]
        assert usage["output_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

        # an audio turn with server VAD: audioStreamEnd only exists on AI Studio (mappings/tables.yaml)
        audio = base64.b64encode(pcm16(400) + bytes(24000 * 2 * 700 // 1000)).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        events = await until(ws, "response.done")
        assert "I heard" in "".join(e.get("delta", "") for e in events if e["type"] == "response.output_text.delta")

    (session,) = sim.sessions
    assert session.backend == backend
    setup_model = session.received[0]["setup"]["model"]
    sent_stream_end = any("audioStreamEnd" in m.get("realtimeInput", {}) for m in session.received)
    if backend == "vertex":
        assert setup_model == f"projects/proj/locations/europe-west4/publishers/google/models/{MODEL}"
        assert session.headers["authorization"] == "Bearer ya29.fake-1"
        assert "x-goog-api-key" not in session.headers
        assert not sent_stream_end
    else:
        assert setup_model == f"models/{MODEL}"
        assert session.headers["x-goog-api-key"] == "AIza-server-key"
        assert sent_stream_end
    assert "sk-livegate" not in json.dumps(session.headers)
    end = next(r for r in caplog.records if r.getMessage().startswith("session_end"))
    logged = json.loads(end.getMessage().split(" ", 1)[1])
    assert logged["backend"] == backend and logged["tokens"]["output_tokens"] > 0
    assert "ya29." not in caplog.text and "AIza-server-key" not in caplog.text


async def test_realtime_vertex_credentials_failure_is_reported(sim: GeminiLiveSimulator, tmp_path: Path) -> None:
    config = backend_config("vertex", sim, tmp_path / "missing.json")
    app = create_app(parse_config(config), simulator_chunk_delay=0)
    async with serve_app(app) as served, websockets.connect(
            f"{served.ws_url}/v1/realtime?model=gpt-realtime",
            additional_headers={"Authorization": "Bearer sk-livegate"}) as ws:
        await until(ws, "session.created")
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        events = await until(ws, "error")
        error = events[-1]["error"]
        assert error["code"] == "upstream_auth_failed"
        assert "Vertex credentials file not found" in error["message"], "the operator-facing reason is named"
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        assert ws.close_code == 1014
    assert not sim.sessions
