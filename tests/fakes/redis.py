"""A throwaway Redis for tests: Debian's `redis-server` on a free loopback port, in a temporary directory, no
persistence, optionally with a password. `.ci/run` installs the package."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def redis_bin() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, password: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="livegate-redis-"))
        self.port = _free_port()
        self.password = password
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart, empty: no persistence) the server and wait until it answers."""
        binary = redis_bin()
        assert binary is not None
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.root), "--logfile", str(self.root / "log")]
        if self.password:
            args += ["--requirepass", self.password]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def halt(self) -> None:
        """An outage: the server is killed (connections are cut); `start()` brings an empty one back."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[RedisServer]:
    if redis_bin() is None:
        raise FileNotFoundError("redis-server")
    server = RedisServer(password)
    try:
        server.start()
        yield server
    finally:
        server.stop()
