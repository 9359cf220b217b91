"""Errors a person can act on (issue 10 §4): config typos, refusals an SDK user can read, close reasons
with the cause first, quiet logs for normal refusals and disconnects, a --help that lists everything."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosed

from livegate import cli
from livegate.close_codes import close_reason
from livegate.config import ConfigError, parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve

KEY = "sk-livegate-test"


def _config(sim_url: str) -> Any:
    return parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": {
        "model": "gemini/gemini-3.8-live", "api_key": "AIza-x", "api_base": sim_url}}],
        "general_settings": {"master_key": KEY}})


@pytest.mark.parametrize(("data", "message"), [
    ({"general_setings": {"master_key": "k"}},
     "general_setings: unknown top-level key; did you mean `general_settings`?"),
    ({"general_settings": {"master_keys": "k"}},
     "general_settings.master_keys: unknown key; did you mean `master_key`?"),
    ({"livegate_settings": {"reattach_grace": 1}},
     "livegate_settings.reattach_grace: unknown key; did you mean `reattach_grace_s`?"),
    ({"model_list": [{"model_name": "m", "livegate_params": {"model": "simulator/x", "api_bsae": "h"}}]},
     "model_list[0].livegate_params.api_bsae: unknown key; did you mean `api_base`?"),
    ({"model_list": [{"model_nmae": "m"}]}, "model_list[0]"),
])
def test_unknown_config_keys_are_errors_with_a_suggestion(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert message in str(info.value)


def test_litellm_settings_livegate_does_not_use_are_accepted(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config({"general_settings": {"master_key": "k", "alerting": ["slack"]},
                           "litellm_settings": {"drop_params": True}, "router_settings": {"num_retries": 2},
                           "model_list": [{"model_name": "m", "litellm_params": {"model": "simulator/x", "rpm": 5}}]})
    assert config.master_key == "k"
    assert "general_settings.alerting is not used by livegate" in caplog.text


def test_lint_reports_an_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("general_setings:\n  master_key: sk-x\n")
    assert cli.main(["lint", "--config", str(path)]) == 1
    assert "did you mean `general_settings`?" in capsys.readouterr().err


def test_gemini_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-from-env")
    config = parse_config({"model_list": [{"model_name": "m", "litellm_params": {"model": "gemini/gemini-3.8-live"}}]})
    assert config.routes[0].api_key == "AIza-from-env"
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setenv("VERTEXAI_PROJECT", "proj")
    monkeypatch.setenv("VERTEXAI_LOCATION", "europe-west4")
    entry = {"model_name": "v", "litellm_params": {"model": "vertex_ai/gemini-3.8-live"}}
    vertex = parse_config({"model_list": [entry]})
    assert (vertex.vertex.project, vertex.vertex.location) == ("proj", "europe-west4")


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name in ("serve", "lint", "simulator", "--ssl-certfile", "--ssl-keyfile"):
        assert name in out


def test_close_reasons_fit_123_bytes_at_a_character_boundary() -> None:
    assert close_reason("short") == "short"
    cut = close_reason("model not available on this gateway: " + "é" * 100)
    assert len(cut.encode()) <= 123 and cut.startswith("model not available") and cut.endswith("é")


async def test_a_refused_client_learns_why_through_the_openai_sdk(caplog: pytest.LogCaptureFixture) -> None:
    """The openai SDK sees an `error` event with the reason (not a bare `HTTP 404`), then a close it does
    not retry; nothing is opened upstream and nothing is logged as an error."""
    caplog.set_level(logging.INFO)
    async with GeminiLiveSimulator(chunk_delay=0) as sim, serve(create_app(_config(sim.url))) as url:
        for key, model, code, status in ((KEY, "no-such-model", "model_not_found", 4404),
                                         ("sk-wrong", "gpt-realtime", "invalid_api_key", 4401)):
            client = AsyncOpenAI(api_key=key, websocket_base_url=url.replace("http", "ws") + "/v1")
            async with client.realtime.connect(model=model) as conn:
                event = await conn.recv()
                assert event.type == "error" and event.error.code == code and event.error.message
                with pytest.raises(ConnectionClosed) as closed:
                    await conn.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == status
            assert closed.value.rcvd.reason.startswith(code)
        assert sim.sessions == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text


async def test_a_client_that_disconnects_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with GeminiLiveSimulator(chunk_delay=0) as sim, serve(create_app(_config(sim.url))) as url:
        ws_url = url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.recv()
            await ws.send('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
                          '"content": [{"type": "input_text", "text": "Hi"}]}}')
            await ws.send('{"type": "response.create"}')
            await ws.recv()
            ws.transport.abort()  # gone mid-answer, without a close frame
        await asyncio.sleep(0.5)
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.recv()  # a clean close after this
    await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
