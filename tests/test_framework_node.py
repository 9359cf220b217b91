"""Node's `ws` (the client most hand-written Node integrations use) against livegate on the simulator: a text
turn, a tool round trip and a cancelled answer, from tests/node/client.mjs (issue 10 §3).

`ws` comes from tests/node/package-lock.json (`npm ci` there; the test runs it when node_modules is missing)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.frameworks_support import KEY, gateway, no_errors

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node_ws() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            pytest.skip(f"npm could not install ws (registry unreachable?): {done.stderr.strip()[-300:]}")
    return NODE_DIR / "client.mjs"


async def test_node_ws_client(node_ws: Path) -> None:
    async with gateway(chunk_delay=0.02) as gw:
        node = await asyncio.create_subprocess_exec("node", str(node_ws), gw.realtime_url, KEY,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        async with asyncio.timeout(30):
            out, err = await node.communicate()
    assert node.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["answers"] == [
        "[livegate simulator] You said: Hello there",
        '[livegate simulator] The tool get_weather returned: {"output": {"temperature_c": 21}}',
        "cancelled",
    ]
    assert result["calls"] == [{"name": "get_weather", "arguments": '{"city":"sample"}'}]
    assert result["errors"] == []
    no_errors(gw.recording)
