"""The playground's WebRTC mode in a real browser: headless Chromium (Debian's) with a fake microphone fed
a sentence by espeak-ng calls livegate with its own RTCPeerConnection (Opus, the `oai-events` data channel),
hears the simulator's answer and shows both transcripts. Then examples/webrtc.html, opened from disk, makes
the same call across origins with a client secret and hangs up.

Chromium and livegate run in a network namespace of their own (tests/webrtc_browser_driver.py) where
loopback is the only interface, so the call's UDP stays on 127.0.0.1. Skipped where Chromium, its driver,
espeak-ng or `unshare -n` (root) is missing; .ci/run runs as root and installs the rest.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from tests.test_playground import _microphone

ROOT = Path(__file__).resolve().parent.parent


def _namespaces() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver") and shutil.which("espeak-ng")),
                       reason="needs chromium, chromium-driver and espeak-ng (.ci/run installs them)"),
    pytest.mark.skipif(not _namespaces(), reason="needs `unshare -n` (root) and `ip` for a loopback-only network"),
]


def test_the_playground_calls_over_webrtc_from_a_real_browser(tmp_path: Path) -> None:
    pytest.importorskip("aiortc", reason="the webrtc extra (aiortc) is not installed")
    microphone = _microphone(tmp_path / "microphone.wav")
    result, screenshot = tmp_path / "result.json", tmp_path / "playground.png"
    driver = f"{sys.executable} -m tests.webrtc_browser_driver {result} {microphone} {screenshot}"
    run = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {driver}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    stats = json.loads(result.read_text())

    assert stats["connected"] and not stats["errors"], stats["errors"]
    assert stats["secret"], "the page minted a client secret from the virtual key and called with it"
    events = stats["events"]
    assert "response.output_audio.delta" not in events, "the answer came over the media track"
    order = [events.index(t) for t in ("session.created", "output_audio_buffer.started", "response.done",
                                       "output_audio_buffer.stopped")]
    assert order == sorted(order), events
    assert stats["gemini_audio_mimes"] == ["audio/pcm;rate=16000"]
    assert stats["sentMs"] > 1500, "the microphone streamed over RTP"
    user = [t["text"] for t in stats["transcripts"] if t["who"] == "user"]
    answer = [t["text"] for t in stats["transcripts"] if t["who"] == "assistant"]
    assert user and "heard" in user[0], stats["transcripts"]
    heard = float(re.search(r"heard ([0-9.]+) s", user[0]).group(1))  # type: ignore[union-attr]
    with wave.open(str(microphone.with_suffix(".speech.wav"))) as wav:
        assert abs(heard - wav.getnframes() / wav.getframerate()) < 0.6, "Gemini heard the whole sentence"
    assert answer and answer[0].startswith("[livegate simulator] I heard"), stats["transcripts"]
    expected_ms = min(3000, 60 * len(answer[0].split()))  # the simulator speaks 60 ms a word
    assert abs(stats["playedMs"] - expected_ms) <= 200, ("the browser played the spoken answer", stats["playedMs"])
    assert answer[0] in stats["page_text"]
    # examples/webrtc.html, opened from disk: a cross-origin page calling with a client secret
    log = stats["example_log"]
    assert "connected: speak" in log and "assistant: [livegate simulator] I heard" in log, log
    assert "hung up" in log and "error" not in log, log
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] == 1280
