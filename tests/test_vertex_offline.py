"""README "Vertex AI offline, on the simulator": the same commands, run as a person would. `livegate` with
no config and TLS (`--ssl-certfile/--ssl-keyfile`), then `examples/vertex_live.py` (google-genai's Vertex
client, unmodified) trusting the self-signed certificate through SSL_CERT_FILE. No Google credentials."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.test_litellm_compat import _self_signed

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_commands_run_the_vertex_route_offline(tmp_path: Path) -> None:
    certfile, keyfile = _self_signed(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LIVEGATE_DB": str(tmp_path / "livegate.db")}
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "DEFAULT_GOOGLE_APPLICATION_CREDENTIALS", "VERTEXAI_CREDENTIALS"):
        env.pop(name, None)
    server = subprocess.Popen([sys.executable, "-m", "livegate.cli", "--port", str(port), "--log-level", "warning",
                               "--ssl-certfile", certfile, "--ssl-keyfile", keyfile],
                              env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "livegate did not start listening"
            time.sleep(0.05)
        client = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "vertex_live.py"), "Hello Vertex",
             "--url", f"https://localhost:{port}/vertex_ai/live"],
            env={**env, "SSL_CERT_FILE": certfile}, capture_output=True, text=True, timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert client.returncode == 0, client.stderr
    assert client.stdout.strip() == "[livegate simulator] You said: Hello Vertex"


def test_out_of_band_answers_go_to_the_family_model_on_the_same_backend() -> None:
    """An out-of-band response's generateContent call: the regional host and the project's model resource on
    Vertex, AI Studio's models/ path; an api_base replaces the origin of both (the simulator serves both)."""
    from livegate.upstream.aistudio import AIStudioProvider
    from livegate.upstream.vertex import VertexProvider

    vertex = VertexProvider("gemini-live-2.5-flash", project="proj-1", location="europe-west4")
    assert vertex.generate_url("gemini-2.5-flash") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/europe-west4/publishers/google/"
        "models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    local = VertexProvider("gemini-live-2.5-flash", project="proj-1", api_base="ws://127.0.0.1:9")
    assert local.generate_url("gemini-2.5-flash").startswith("http://127.0.0.1:9/v1/projects/proj-1/")
    studio = AIStudioProvider("gemini-3.8-live", api_key="k")
    assert studio.generate_url("gemini-3.8-flash") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.8-flash:streamGenerateContent?alt=sse")
