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


def _driver(*flags: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=1280,720", *flags):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def _wait_for_answer(driver: Any, answers: int = 1, timeout: float = 45) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = driver.execute_script("return window.playground")
        if stats and stats["events"].count("response.done") >= answers and stats["playedMs"] > 0:
            break
        time.sleep(0.25)
    time.sleep(1.0)  # the rest of the answer plays out
    return dict(driver.execute_script("return window.playground"))


def _browse(url: str, microphone: Path, screenshot: Path) -> dict[str, Any]:
    driver = _driver("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={microphone}%noloop")
    try:
        driver.get(url)
        stats = _wait_for_answer(driver)
        driver.save_screenshot(str(screenshot))
        stats["page_text"] = driver.find_element("id", "transcript").text
        return stats
    finally:
        driver.quit()


def _type_without_microphone(url: str, screenshot: Path) -> dict[str, Any]:
    """No fake device and no permission: the page has no microphone and must say so; then a typed turn."""
    from selenium.webdriver.common.keys import Keys

    driver = _driver()
    try:
        driver.get(url)
        deadline = time.monotonic() + 30
        while not driver.execute_script("return window.playground.microphone").startswith("unavailable"):
            assert time.monotonic() < deadline, "the page never said the microphone was unavailable"
            time.sleep(0.2)
        box = driver.find_element("id", "text")
        box.send_keys("Hello from the keyboard", Keys.ENTER)
        stats = _wait_for_answer(driver)
        stats["notice"] = driver.find_element("id", "notice").text
        stats["status"] = driver.find_element("id", "status").text
        stats["page_text"] = driver.find_element("id", "transcript").text
        rows = driver.find_elements("css selector", "#log details")
        stats["log_rows"] = [row.find_element("css selector", "summary").text for row in rows]
        done = next(row for row in rows if row.find_element("css selector", "summary").text == "response.done")
        done.find_element("css selector", "summary").click()
        stats["done_json"] = done.find_element("css selector", "pre").text
        driver.save_screenshot(str(screenshot))
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


async def test_without_a_microphone_the_page_says_so_and_a_typed_message_is_answered(tmp_path: Path) -> None:
    async with GeminiLiveSimulator(chunk_delay=0.005, api_key=None) as sim:
        config = parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-live-2.5-flash", "api_key": "AIza-sim", "api_base": sim.url}}]})
        async with serve(create_app(config, simulator_chunk_delay=0)) as base:
            stats = await asyncio.to_thread(_type_without_microphone, f"{base}/playground#autostart=1",
                                            tmp_path / "typed.png")

    assert stats["connected"] and not stats["errors"], stats["errors"]
    assert stats["microphone"].startswith("unavailable: "), stats["microphone"]
    assert stats["notice"].startswith("No microphone: ") and "Type a message below" in stats["notice"]
    assert stats["status"] == "connected: no microphone, type below"
    assert stats["sent"][:3] == ["session.update", "conversation.item.create", "response.create"], stats["sent"]
    answer = [t["text"] for t in stats["transcripts"] if t["who"] == "assistant"]
    assert answer == ["[livegate simulator] You said: Hello from the keyboard"], stats["transcripts"]
    assert "Hello from the keyboard" in stats["page_text"] and answer[0] in stats["page_text"]
    assert stats["playedMs"] > 0, "the spoken answer was played"
    # The event view lists what was received and what the page sent, and opens each one as JSON.
    assert {"session.created", "response.done", "conversation.item.create", "response.create"} <= set(stats["log_rows"])
    assert '"type": "response.done"' in stats["done_json"] and '"status": "completed"' in stats["done_json"]
