"""Drives the playground's WebRTC mode in headless Chromium; run by tests/test_webrtc_browser.py inside a
network namespace of its own (`unshare -n`), where loopback is the only network: Chromium's ICE candidates
(loopback allowed by a flag) and livegate's are all 127.0.0.1, so the call's UDP never leaves it.

    python -m tests.webrtc_browser_driver RESULT.json MICROPHONE.wav SCREENSHOT.png
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve

KEY = "sk-browser-webrtc"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1280,720",
         "--allow-loopback-in-peer-connection",  # the namespace has no other network
         "--disable-features=WebRtcHideLocalIpsWithMdns")  # plain 127.0.0.1 candidates, no mDNS names


def _chromium(microphone: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")  # type: ignore[assignment]
    for flag in (*FLAGS, f"--use-file-for-fake-audio-capture={microphone}%noloop"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def example(base: str, secret: str, microphone: Path) -> str:
    """examples/webrtc.html opened from disk (another origin): fill in livegate's URL and a client secret,
    start the call, return the page's log once the answer's transcript is in it."""
    driver = _chromium(microphone)
    try:
        driver.get((Path(__file__).resolve().parent.parent / "examples" / "webrtc.html").as_uri())
        driver.execute_script("document.getElementById('base').value = arguments[0];"
                              "document.getElementById('secret').value = arguments[1];"
                              "document.getElementById('start').click();", base, secret)
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and "assistant:" not in text:
            time.sleep(0.25)
            text = driver.find_element("id", "log").text
        driver.find_element("id", "stop").click()
        time.sleep(0.5)
        return str(driver.find_element("id", "log").text)
    finally:
        driver.quit()


def browse(url: str, microphone: Path, screenshot: Path) -> dict[str, Any]:
    driver = _chromium(microphone)
    try:
        driver.get(url)
        deadline = time.monotonic() + 45
        stats: dict[str, Any] = {}
        while time.monotonic() < deadline:
            stats = driver.execute_script("return window.playground")
            if stats and "output_audio_buffer.stopped" in stats["events"]:
                break
            time.sleep(0.25)
        time.sleep(1.0)  # the meters catch up (the sender's statistics come every second or so)
        stats = driver.execute_script("return window.playground")
        driver.save_screenshot(str(screenshot))
        stats["page_text"] = driver.find_element("id", "transcript").text
        return stats
    finally:
        driver.quit()


async def main(result: Path, microphone: Path, screenshot: Path) -> None:
    async with GeminiLiveSimulator(chunk_delay=0.005, api_key=None) as sim:
        config = parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-sim", "api_base": sim.url}}],
            "general_settings": {"master_key": KEY},
            "livegate_settings": {"webrtc_host_addresses": ["127.0.0.1"]}})
        async with serve(create_app(config, simulator_chunk_delay=0)) as base, httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as http:
            key = (await http.post("/key/generate", json={"models": ["gpt-realtime"]})).json()["key"]
            url = f"{base}/playground#model=gpt-realtime&key={key}&transport=webrtc&autostart=1"
            stats = await asyncio.to_thread(browse, url, microphone, screenshot)
            secret = (await http.post("/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"},
                                      json={"session": {"type": "realtime", "model": "gpt-realtime"}})).json()
            stats["example_log"] = await asyncio.to_thread(example, base, secret["value"], microphone)
            stats["gemini_audio_mimes"] = sorted({m["realtimeInput"]["audio"]["mimeType"]
                                                  for s in sim.sessions for m in s.received
                                                  if "audio" in m.get("realtimeInput", {})})
    result.write_text(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
