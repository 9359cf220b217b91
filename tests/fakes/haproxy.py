"""A real HAProxy (Debian's `haproxy`, which .ci/run installs) in front of livegate instances for tests: the
manual's own config (docs/operating/failures.md, "Deploying without dropping calls"), with its addresses
replaced by loopback ports, started in the foreground on a free port."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.docs_blocks import ROOT, code_blocks

PAGE = ROOT / "docs" / "operating" / "failures.md"
NO_HAPROXY = "HAProxy is not installed: apt-get install haproxy (.ci/run does)"


def haproxy_bin() -> str | None:
    return shutil.which("haproxy") or (shutil.which("/usr/sbin/haproxy") if Path("/usr/sbin/haproxy").exists()
                                       else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manual_config() -> str:
    """The HAProxy config of the manual, exactly as printed there."""
    [block] = [b for b in code_blocks(PAGE) if b.kind == "file" and b.arg == "haproxy.cfg"]
    return block.code


def loopback_config(listen: int, servers: list[int]) -> str:
    """The manual's config with its listener on `listen` and its servers on these loopback ports, in order."""
    config = re.sub(r"(?m)^(\s*bind\s+)\S+", lambda m: f"{m.group(1)}127.0.0.1:{listen}", manual_config())
    addresses = iter(servers)
    config = re.sub(r"(?m)^(\s*server\s+\S+\s+)\S+", lambda m: f"{m.group(1)}127.0.0.1:{next(addresses)}", config)
    if next(addresses, None) is not None:
        raise ValueError("more servers than the manual's config has")
    return config


@contextmanager
def haproxy(listen: int, servers: list[int]) -> Iterator[str]:
    """HAProxy balancing `servers` on `listen`; yields its base URL (http://127.0.0.1:PORT)."""
    binary = haproxy_bin()
    if binary is None:
        raise FileNotFoundError("haproxy")
    root = Path(tempfile.mkdtemp(prefix="livegate-haproxy-"))
    config = root / "haproxy.cfg"
    config.write_text(loopback_config(listen, servers))
    log = (root / "log").open("w")
    proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {(root / 'log').read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", listen)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("haproxy did not listen")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listen}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
