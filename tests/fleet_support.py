"""Livegate processes for the take-over tests and bench/bench_faults.py: a fleet of `livegate` commands sharing
one store and one Gemini simulator, behind HAProxy (tests/fakes/haproxy.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from livegate.simulator import GeminiLiveSimulator
from tests.fakes.haproxy import free_port

MASTER = "sk-master-takeover-fleet"
ROOT = Path(__file__).resolve().parent.parent

@dataclass
class Instance:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Fleet:
    url: str  # HAProxy's
    sim: GeminiLiveSimulator
    instances: list[Instance] = field(default_factory=list)

    async def holder(self) -> Instance:
        """The instance whose readiness counts the session."""
        async with httpx.AsyncClient() as http:
            for instance in self.instances:
                if instance.proc.poll() is not None:
                    continue
                state = (await http.get(instance.url + "/health/readiness")).json()
                if state.get("active_sessions"):
                    return instance
        raise AssertionError("no instance holds the session")

    def stop_all(self) -> None:
        for instance in self.instances:
            if instance.proc.poll() is None:
                instance.proc.kill()
            instance.proc.wait()


def fleet_config(tmp_path: Path, sim: GeminiLiveSimulator, database_url: str) -> Path:
    path = tmp_path / "livegate.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-fleet", "api_base": sim.url}}],
        "general_settings": {"master_key": MASTER, "database_url": database_url},
        "livegate_settings": {"reattach_grace_s": 30, "drain_timeout_s": 10},
    }))
    return path


async def start_instance(config: Path, tmp_path: Path, port: int | None = None) -> Instance:
    port = port or free_port()
    log = tmp_path / f"livegate-{port}-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "engine")}
    proc = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--config", str(config), "--port", str(port),
                             "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    instance = Instance(port, proc, log, config)
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"livegate exited: {log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(instance.url + "/health/readiness")).status_code == 200:
                    return instance
            await asyncio.sleep(0.1)
    raise AssertionError(f"livegate did not start: {log.read_text()[-3000:]}")
