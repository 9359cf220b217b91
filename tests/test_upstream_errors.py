"""A Gemini Live that cannot be reached is reported with its host and what to check, at WARNING, to the
operator's log and to the client: "cannot reach HOST: the name does not resolve (no network? ...)",
never a bare exception name."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from livegate.config import parse_config
from livegate.server import create_app
from livegate.upstream.connection import connect_failure
from tests.support import serve


def _config(api_base: str) -> Any:
    return parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": {
        "model": "gemini/gemini-3.8-live", "api_key": "AIza-secret-key", "api_base": api_base}}]})


async def _first_turn_error(base: str) -> tuple[dict[str, Any], int | None]:
    async with websockets.connect(base.replace("http", "ws") + "/v1/realtime?model=gpt-realtime") as ws:
        await ws.send(json.dumps({"type": "response.create"}))
        while (event := json.loads(await ws.recv()))["type"] != "error":
            pass
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        return event["error"], ws.close_code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nothing_listening_names_the_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    port = _free_port()
    async with serve(create_app(_config(f"http://127.0.0.1:{port}"))) as base:
        error, code = await _first_turn_error(base)
    problem = f"cannot reach 127.0.0.1:{port}: connection refused (nothing listening there: check api_base)"
    assert error["code"] == "upstream_unavailable" and error["message"] == f"Gemini Live: {problem}"
    assert code == 1014
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "livegate.upstream"]
    assert warnings == [f"Gemini Live connection failed: {problem}"]
    assert "AIza-secret-key" not in caplog.text


async def test_an_http_refusal_names_the_status_and_what_to_check(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(connection: Any, request: Any) -> Response:
        return Response(403, "Forbidden", Headers(), b"API key not valid")

    async with ws_serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as google:
        port = google.sockets[0].getsockname()[1]
        async with serve(create_app(_config(f"http://127.0.0.1:{port}"))) as base:
            error, code = await _first_turn_error(base)
    assert error["message"] == (f"Gemini Live: 127.0.0.1:{port} refused the connection (HTTP 403): check the API key "
                                "or the credentials and the project's access to the model")
    assert code == 1014
    assert any(r.levelno == logging.WARNING and "HTTP 403" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("url", "exc", "said"), [
    ("wss://generativelanguage.googleapis.com/ws/x?key=AIza-secret", socket.gaierror(-2, "Name or service not known"),
     "cannot reach generativelanguage.googleapis.com: the name does not resolve (no network? a typo in api_base?)"),
    ("wss://us-central1-aiplatform.googleapis.com:443/ws/y", TimeoutError(),
     "cannot reach us-central1-aiplatform.googleapis.com: no answer within 10 s (no network? a firewall or proxy?)"),
    ("ws://10.0.0.7:9000/ws", OSError(113, "No route to host"), "cannot reach 10.0.0.7:9000: No route to host"),
])
def test_each_cause_says_what_to_check(url: str, exc: BaseException, said: str) -> None:
    assert connect_failure(url, exc, 10) == said  # the host only: a key in the query never shows
