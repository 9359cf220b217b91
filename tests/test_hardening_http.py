"""Hardening of the HTTP side (issue 12): the REST passthrough's allow-list on every path, request body and
pool limits that blame the right party, header timeouts against slowloris, no API docs without a key, and
keys kept out of the logs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.responses import JSONResponse, Response
from uvicorn.logging import AccessFormatter

from livegate.config import parse_config
from livegate.server import create_app
from livegate.server.hygiene import redact
from livegate.server.passthrough import rest as rest_module
from livegate.server.serving import uvicorn_options
from tests.fakes import serve_app
from tests.fakes.google import FakeVertexRest, generate_content_response
from tests.support import refusal, serve
from tests.test_passthrough import GENERATE, KEY, MODEL, mappings

AUTH = {"Authorization": f"Bearer {KEY}"}


def rest_config(google_url: str, sa_file: Path, **settings: Any) -> dict[str, Any]:
    return {"model_list": [
        {"model_name": MODEL, "litellm_params": {"model": f"vertex_ai/{MODEL}"}},
        {"model_name": "my-flash", "litellm_params": {"model": "vertex_ai/gemini-2.5-flash"}},
    ], "litellm_settings": {"default_vertex_config": {
        "vertex_project": "proj", "vertex_credentials": str(sa_file), "api_base": google_url}},
        "general_settings": {"master_key": KEY}, "livegate_settings": settings}


def served(config: dict[str, Any]) -> Any:
    """livegate under uvicorn with the options the `livegate` command uses."""
    parsed = parse_config(config)
    options = {k: v for k, v in uvicorn_options(parsed).items() if k != "ws"}
    return serve(create_app(parsed, mappings(), simulator_chunk_delay=0), **options)


@pytest.fixture
async def google() -> AsyncIterator[tuple[FakeVertexRest, str]]:
    fake = FakeVertexRest()
    async with serve_app(fake) as google_side:
        yield fake, google_side.url


async def raw_request(url: str, method: str, target: str, body: bytes) -> tuple[int, bytes]:
    """One request with the target exactly as given, over a plain socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
    writer.write(f"{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n"
                 f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, content = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), content


# --- the allow-list holds on every path ------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    GENERATE.replace(f"{MODEL}:generateContent", f"{MODEL}/../gemini-1.0-ultra:generateContent"),
    GENERATE.replace(f"{MODEL}:generateContent", f"{MODEL}/%2e%2e/gemini-1.0-ultra:generateContent"),
    GENERATE.replace(f"{MODEL}:generateContent", f"{MODEL}/%2E%2E/gemini-1.0-ultra:generateContent"),
    GENERATE.replace(f"{MODEL}:generateContent", f"{MODEL}%2F..%2Fgemini-1.0-ultra:generateContent"),
    GENERATE.replace("publishers/google", "publishers/google/./."),
    "/vertex_ai/v1/projects/proj/locations/us-central1/endpoints/../publishers/google/models/x:generateContent",
])
async def test_rest_dot_segments_cannot_reach_an_unlisted_model(google: tuple[FakeVertexRest, str], sa_file: Path,
                                                                path: str) -> None:
    fake, google_url = google
    async with served(rest_config(google_url, sa_file)) as url, httpx.AsyncClient(base_url=url) as client:
        status, body = await raw_request(url, "POST", path, b"{}")  # httpx would resolve the dot segments itself
        assert status == 400 and json.loads(body)["error"]["code"] == "invalid_path", path
        assert fake.requests == [], "nothing reached Google"
        # every model a path names must be listed, not just the first
        double = GENERATE.replace(f"models/{MODEL}", f"models/{MODEL}/models/gemini-1.0-ultra")
        assert (await client.post(double, content=b"{}", headers=AUTH)).status_code == 403
        assert (await client.post(GENERATE, content=b"{}", headers=AUTH)).status_code == 200
    assert [r.path for r in fake.requests] == [GENERATE.removeprefix("/vertex_ai")]


# --- body, pool and header limits ------------------------------------------------------------------------


async def _slow_upload(port: int, path: str, declared: int = 1000) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send headers and the first bytes of a body, then stall."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\n"
                  f"content-type: application/json\r\ncontent-length: {declared}\r\n\r\n").encode() + b'{"cont')
    await writer.drain()
    return reader, writer


async def test_slow_uploads_get_408_and_do_not_hold_the_pool(google: tuple[FakeVertexRest, str], sa_file: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe: slow uploads with a valid key exhausted the upstream pool, then every request got a 504
    blaming Vertex. Bodies are now read before a pooled connection is taken, within a deadline."""
    monkeypatch.setattr(rest_module, "LIMITS", httpx.Limits(max_connections=2))
    fake, google_url = google
    async with served(rest_config(google_url, sa_file, http_body_timeout_s=1.0)) as url, \
            httpx.AsyncClient(base_url=url) as client:
        port = int(url.rsplit(":", 1)[1])
        uploads = [await _slow_upload(port, GENERATE) for _ in range(4)]  # twice the pool
        await asyncio.sleep(0.2)
        response = await client.post(GENERATE, content=b'{"contents": []}', headers=AUTH)
        assert response.status_code == 200, "other requests are served meanwhile"
        for reader, writer in uploads:
            head = await asyncio.wait_for(reader.read(4096), 5)
            assert head.startswith(b"HTTP/1.1 408"), head[:80]
            assert b"request_timeout" in head and b"Vertex" not in head
            writer.close()
        too_big = await client.post(GENERATE, content=b"x" * 2000, headers=AUTH)
        assert too_big.status_code == 200, "the default limit is large"
    async with served(rest_config(google_url, sa_file, max_request_body_bytes=1000)) as url, \
            httpx.AsyncClient(base_url=url) as client:
        too_big = await client.post(GENERATE, content=b"x" * 2000, headers=AUTH)
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    assert len(fake.requests) == 2


async def test_exhausted_pool_is_503_not_a_vertex_timeout(google: tuple[FakeVertexRest, str], sa_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rest_module, "LIMITS", httpx.Limits(max_connections=1))
    monkeypatch.setattr(rest_module, "TIMEOUT", httpx.Timeout(10.0, pool=0.3))
    fake, google_url = google
    release = asyncio.Event()

    async def slow(_: Any) -> Response:
        await asyncio.wait_for(release.wait(), 10)
        return JSONResponse(generate_content_response("late"))

    fake.respond = slow
    async with served(rest_config(google_url, sa_file)) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        first = asyncio.create_task(client.post(GENERATE, content=b"{}", headers=AUTH))
        while not fake.requests:
            await asyncio.sleep(0.01)
        busy = await client.post(GENERATE, content=b"{}", headers=AUTH)
        assert busy.status_code == 503
        error = busy.json()["error"]
        assert error["code"] == "gateway_busy" and "Vertex AI did not answer" not in error["message"]
        release.set()
        assert (await first).status_code == 200


async def test_client_leaving_mid_upload_is_logged_without_traceback(google: tuple[FakeVertexRest, str],
                                                                     sa_file: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake, google_url = google
    async with served(rest_config(google_url, sa_file)) as url:
        _, writer = await _slow_upload(int(url.rsplit(":", 1)[1]), GENERATE)
        await asyncio.sleep(0.1)
        writer.close()
        for _ in range(100):
            if any("disconnected while sending" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    assert any("disconnected while sending" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert fake.requests == []


async def test_slow_header_lines_time_out(google: tuple[FakeVertexRest, str], sa_file: Path) -> None:
    """Slowloris: header lines trickling in, without a key, are cut off after http_header_timeout_s."""
    _, google_url = google
    async with served(rest_config(google_url, sa_file, http_header_timeout_s=0.5)) as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        started = asyncio.get_running_loop().time()
        answer = b""
        with pytest.raises((ConnectionError, TimeoutError)):  # the server closes while we still write
            for i in range(50):
                writer.write(f"x-slow-{i}: y\r\n".encode())
                await writer.drain()
                try:
                    answer += await asyncio.wait_for(reader.read(1024), 0.1)
                except TimeoutError:
                    continue
                if reader.at_eof():
                    raise ConnectionError("closed")
        elapsed = asyncio.get_running_loop().time() - started
        assert answer.startswith(b"HTTP/1.1 408") and elapsed < 3
        writer.close()
        # a connection that says nothing at all is closed too
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(1024), 3) == b"HTTP/1.1 408 Request Timeout\r\ncontent-length: " \
                                                               b"0\r\nconnection: close\r\n\r\n"
        writer.close()
        # the deadline covers the headers only: a long request, a kept-alive connection and a WebSocket live on
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/health")).status_code == 200
            await asyncio.sleep(0.8)
            assert (await client.get("/health")).status_code == 200
        async with websockets.connect(url.replace("http", "ws") + f"/v1/realtime?model={MODEL}",
                                      additional_headers=AUTH) as ws:
            await asyncio.sleep(0.8)
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "session.updated"


# --- exposure and logs -----------------------------------------------------------------------------------


async def test_api_docs_are_not_served(google: tuple[FakeVertexRest, str], sa_file: Path) -> None:
    _, google_url = google
    async with served(rest_config(google_url, sa_file)) as url, httpx.AsyncClient(base_url=url) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            for headers in ({}, AUTH):
                assert (await client.get(path, headers=headers)).status_code == 404, path
        assert (await client.get("/health")).status_code == 200


async def test_keys_in_the_query_never_reach_the_logs(google: tuple[FakeVertexRest, str], sa_file: Path,
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO)
    fake, google_url = google
    secret = "sk-query-secret-123"
    async with served(rest_config(google_url, sa_file)) as url:
        for name in ("uvicorn.access", "uvicorn.error"):  # uvicorn's own loggers do not propagate to the root
            logger = logging.getLogger(name)
            monkeypatch.setattr(logger, "handlers", [caplog.handler])
            monkeypatch.setattr(logger, "level", logger.level)  # restored afterwards
            logger.setLevel(logging.INFO)
        async with httpx.AsyncClient(base_url=url) as client:
            await client.get(f"/health?key={secret}")
            await client.post(f"{GENERATE}?alt=json&key={secret}", content=b"{}", headers=AUTH)
            await client.get(f"/vertex_ai/v1/projects/p/locations/us-central1/endpoints?access_token={secret}")
        status, _ = await refusal(  # refused: wrong key, and one more in the query
            websockets.connect(url.replace("http", "ws") + f"/v1/realtime?model={MODEL}&api_key={secret}"))
        assert status == 401
    assert fake.requests and fake.requests[0].query == f"alt=json&key={secret}", "Google still gets the query"
    messages = [r.getMessage() for r in caplog.records]
    assert any("/health?key=[redacted]" in m for m in messages), "access lines keep the path"
    assert any("api_key=[redacted]" in m for m in messages), "WebSocket handshake lines too"
    assert not [m for m in messages if secret in m]
    # as uvicorn's own access formatter prints them (it unpacks the record's arguments)
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False)
    lines = [formatter.format(r) for r in access]
    assert any("/health?key=[redacted] HTTP/1.1" in line for line in lines) and not any(secret in x for x in lines)
    refusals = [r for r in caplog.records if "/v1/realtime" in r.getMessage()]
    assert refusals and all(r.levelno == logging.INFO and not r.exc_info for r in refusals)


@pytest.mark.parametrize(("line", "expected"), [
    ("GET /x?key=abc&alt=sse HTTP/1.1", "GET /x?key=[redacted]&alt=sse HTTP/1.1"),
    ("/v1/realtime?model=m&x-goog-api-key=abc", "/v1/realtime?model=m&x-goog-api-key=[redacted]"),
    ("https://h/p?alt=sse&access_token=ya29.x&Signature=s", "https://h/p?alt=sse&access_token=[redacted]&"
                                                            "Signature=[redacted]"),
    ("/v1/realtime?model=monkey", "/v1/realtime?model=monkey"),
    ('"POST /key/sk-secret-value-0123456789/regenerate HTTP/1.1" 200',
     '"POST /key/[redacted]/regenerate HTTP/1.1" 200'),
    ("POST /key/regenerate HTTP/1.1", "POST /key/regenerate HTTP/1.1"),
])
def test_redaction(line: str, expected: str) -> None:
    assert redact(line) == expected
