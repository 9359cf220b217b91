"""`livegate` as a command: the transport it serves with, and `--workers N` serving realtime sessions."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import connect

from livegate.config import ConfigError, parse_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _livegate(tmp_path: Path, *args: str, settings: str = "") -> Iterator[str]:
    config = tmp_path / "config.yaml"
    config.write_text("model_list:\n  - model_name: sim\n    livegate_params: {model: simulator/sim}\n" + settings)
    port = _free_port()
    env = {**os.environ, "LIVEGATE_DB": str(tmp_path / "livegate.db")}  # never the user's own spend store
    proc = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
                             "--log-level", "warning", *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "livegate did not start listening"
            time.sleep(0.05)
        yield f"ws://127.0.0.1:{port}/v1/realtime?model=sim"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _text_turn(url: str) -> tuple[str | None, str]:
    """One text turn through livegate; returns the negotiated extensions header and the answer."""
    with connect(url, open_timeout=30) as ws:  # the client offers permessage-deflate, as the SDKs do
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}))
        ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}}))
        ws.send(json.dumps({"type": "response.create"}))
        while (event := json.loads(ws.recv(timeout=30)))["type"] != "response.output_text.done":
            pass
        return extensions, event["text"]


def test_no_compression_on_the_client_link_by_default(tmp_path: Path) -> None:
    with _livegate(tmp_path) as url:
        extensions, text = _text_turn(url)
    assert extensions is None
    assert "hello" in text
    # The session's spend row went to the test's own store, not to ~/.local/share/livegate.
    with sqlite3.connect(tmp_path / "livegate.db") as db:
        assert db.execute("select model from livegate_spend_logs").fetchall() == [("sim",)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="uvicorn workers on POSIX")
def test_workers_serve_sessions_and_compression_can_be_turned_on(tmp_path: Path) -> None:
    with _livegate(tmp_path, "--workers", "2", settings="livegate_settings:\n  client_compression: true\n") as url:
        answers = [_text_turn(url) for _ in range(4)]
    assert all(extensions and "permessage-deflate" in extensions for extensions, _ in answers)
    assert all("hello" in text for _, text in answers)


def test_client_compression_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="client_compression"):
        parse_config({"model_list": [], "livegate_settings": {"client_compression": "yes"}})


def _event_loop_of_a_served_session(tmp_path: Path, *python_args: str) -> tuple[str, str]:
    """Start `livegate` (with `python_args` before `-m`), hold one text turn, return its log and the answer."""
    config = tmp_path / "config.yaml"
    config.write_text("model_list:\n  - model_name: sim\n    livegate_params: {model: simulator/sim}\n")
    port = _free_port()
    env = {**os.environ, "LIVEGATE_DB": str(tmp_path / "livegate.db")}
    proc = subprocess.Popen([sys.executable, *python_args, "--config", str(config), "--port", str(port),
                             "--log-level", "info"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "livegate did not start listening"
            time.sleep(0.05)
        _, text = _text_turn(f"ws://127.0.0.1:{port}/v1/realtime?model=sim")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.stderr is not None
    return proc.stderr.read(), text


def test_livegate_serves_on_uvloop_when_installed_and_on_asyncio_without_it(tmp_path: Path) -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed here (the `uvloop` extra)")
    log, text = _event_loop_of_a_served_session(tmp_path, "-m", "livegate.cli")
    assert "event loop: uvloop" in log and "hello" in text
    # Without uvloop (its import fails, as on a platform it does not support), asyncio's loop serves the same.
    without = "import sys; sys.modules['uvloop'] = None; from livegate.cli import main; sys.exit(main())"
    log, text = _event_loop_of_a_served_session(tmp_path, "-c", without)
    assert "event loop: asyncio" in log and "hello" in text
