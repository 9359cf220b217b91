"""The playground page in a real browser: headless Chromium (Debian's) with a fake microphone fed a
sentence spoken by espeak-ng, against livegate and its simulator over loopback.

The page mints a client secret from a virtual key (POST /v1/realtime/client_secrets) and connects with
it in the browser subprotocol, streams the microphone, plays the simulator's spoken
answer, shows both transcripts, and the screenshot shows them. Skipped where Chromium or its driver is
missing; .ci/run installs both.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve

KEY = "sk-playground-test"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER and shutil.which("espeak-ng")),
                                reason="needs chromium, chromium-driver and espeak-ng (.ci/run installs them)")


def _microphone(path: Path) -> Path:
    """A sentence, then two seconds of silence so the simulator's VAD ends the turn."""
    spoken = path.with_suffix(".speech.wav")
    subprocess.run(["espeak-ng", "-w", str(spoken), "What time is it in the browser?"], check=True, capture_output=True)
    with wave.open(str(spoken)) as wav:
        rate, frames = wav.getframerate(), wav.readframes(wav.getnframes())
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames + struct.pack(f"<{2 * rate}h", *([0] * 2 * rate)))
    return path


def _browse(url: str, microphone: Path, screenshot: Path) -> dict[str, Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={microphone}%noloop",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,720"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(url)
        deadline = time.monotonic() + 45
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = driver.execute_script("return window.playground")
            if stats and "response.done" in stats["events"] and stats["playedMs"] > 0:
                break
            time.sleep(0.25)
        time.sleep(1.0)  # the rest of the answer plays out
        stats = driver.execute_script("return window.playground")
        driver.save_screenshot(str(screenshot))
        stats["page_text"] = driver.find_element("id", "transcript").text
        return stats
    finally:
        driver.quit()


async def test_the_playground_talks_through_a_real_browser(tmp_path: Path) -> None:
    microphone = _microphone(tmp_path / "microphone.wav")
    async with GeminiLiveSimulator(chunk_delay=0.005, api_key=None) as sim:
        config = parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-live-2.5-flash", "api_key": "AIza-sim", "api_base": sim.url}}],
            "general_settings": {"master_key": KEY}})
        async with serve(create_app(config, simulator_chunk_delay=0)) as base, httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as http:
            key = (await http.post("/key/generate", json={"models": ["gpt-realtime"]})).json()["key"]
            url = f"{base}/playground#model=gpt-realtime&key={key}&autostart=1"
            stats = await asyncio.to_thread(_browse, url, microphone, tmp_path / "playground.png")

    assert stats["connected"] and not stats["errors"], stats["errors"]
    assert stats["secret"], "the page minted a client secret from the virtual key and connected with it"
    assert stats["sentMs"] > 1500, "the microphone streamed the sentence"
    user = [t["text"] for t in stats["transcripts"] if t["who"] == "user"]
    answer = [t["text"] for t in stats["transcripts"] if t["who"] == "assistant"]
    assert user and "heard" in user[0], stats["transcripts"]
    assert answer and answer[0].startswith("[livegate simulator] I heard"), stats["transcripts"]
    assert stats["playedMs"] >= 400, "the spoken answer was played"
    assert answer[0] in stats["page_text"], "the page shows the answer's transcript"
    assert "session.created" in stats["events"] and "response.done" in stats["events"]
    setup = sim.sessions[0].setup
    assert setup["tools"][0]["functionDeclarations"][0]["name"] == "get_time"
    png = (tmp_path / "playground.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24])[0] == 1280
