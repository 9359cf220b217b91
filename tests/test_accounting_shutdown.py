"""SIGTERM loses no spend: a real `livegate` process with an open session is terminated; the session's
spend row is in its SQLite file afterwards. Also: with no store configured, `livegate` creates its
embedded SQLite file on first start (README command 1 needs nothing else)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

MASTER = "sk-master-shutdown-test"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                if (await http.get(url + "/health/readiness")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("livegate did not start")


def _start(tmp_path: Path, config: str | None, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    args = [sys.executable, "-m", "livegate.cli", "--port", str(port), *(["--config", config] if config else [])]
    process = subprocess.Popen(args, cwd=tmp_path, env={**os.environ, **env}, stderr=subprocess.PIPE)
    return process, f"http://127.0.0.1:{port}"


async def test_sigterm_flushes_the_spend_of_open_sessions(tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "model_list": [{"model_name": "gpt-realtime", "livegate_params": {"model": "simulator/gemini-3.8-live"}}],
        "general_settings": {"master_key": MASTER}, "livegate_settings": {"store_path": str(db)}}))
    process, url = _start(tmp_path, str(config), {})
    try:
        await _wait_ready(url, process)
        ws_url = url.replace("http", "ws") + "/v1/realtime?model=gpt-realtime"
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {MASTER}"}) as ws:
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "response.done":
                pass
            process.send_signal(signal.SIGTERM)  # the session is still open
            # uvicorn shuts down gracefully, then re-raises the signal: the exit status is -SIGTERM
            assert await asyncio.to_thread(process.wait, 20) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    rows = sqlite3.connect(db).execute("SELECT model, total_tokens, spend FROM livegate_spend_logs").fetchall()
    assert len(rows) == 1 and rows[0][0] == "gpt-realtime" and rows[0][1] > 0 and rows[0][2] is not None


async def test_no_config_creates_the_embedded_store(tmp_path: Path) -> None:
    db = tmp_path / "data" / "livegate" / "livegate.db"
    process, url = _start(tmp_path, None, {"XDG_DATA_HOME": str(tmp_path / "data"), "LIVEGATE_DB": ""})
    try:
        await _wait_ready(url, process)
        assert db.exists()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 20)
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"livegate_keys", "livegate_spend_logs", "livegate_migrations"} <= tables
