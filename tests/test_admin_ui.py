"""The admin page (/ui) in a real browser: headless Chromium (Debian's) driven by selenium against livegate
on loopback. Sign in with the master key; create a team and a key with the forms; block, regenerate and
edit with the buttons; end a live session with its button (the client sees 4003); see the recent errors;
and the spend chart draws: the screenshot has the first model's colour inside the chart. Skipped where
Chromium or its driver is missing; .ci/run installs both."""

from __future__ import annotations

import asyncio
import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.governance_support import MASTER, Gov, governed, text_turn, until_closed

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver (.ci/run)")
FIRST_SERIES = (0xE4, 0x57, 0x2E)  # app.js COLORS[0]


class Page:
    """A selenium driver whose calls run off the event loop (the server under test runs on it)."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM  # type: ignore[assignment]
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,2000", "--force-device-scale-factor=1"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(DRIVER), options=options)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def state(self) -> dict[str, Any]:
        return self.driver.execute_script("return window.livegateAdmin")  # type: ignore[no-any-return]

    async def until(self, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = await self.run(self.state)
            if state and check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what}: {state and state.get('lastError')}")
            await asyncio.sleep(0.2)

    def fill(self, form: str, values: dict[str, str]) -> None:
        for name, value in values.items():
            field = self.driver.find_element("css selector", f"#{form} [name={name}]")
            field.clear()
            field.send_keys(value)
        self.driver.find_element("css selector", f"#{form} button[type=submit]").click()

    def click(self, selector: str) -> None:
        self.driver.find_element("css selector", selector).click()

    def text(self, selector: str) -> str:
        return str(self.driver.find_element("css selector", selector).text)


async def test_the_admin_page_in_a_real_browser(tmp_path: Path) -> None:
    async with governed(f"sqlite:///{tmp_path / 'ui.db'}", general={"store_prompts_in_spend_logs": True}) as gov:
        session = await _spend_something(gov)
        page = Page()
        try:
            await _drive(gov, page, tmp_path)
            await _transcript(page, session)
        finally:
            await page.run(page.driver.quit)


async def _spend_something(gov: Gov) -> str:
    """One session whose transcript is kept (with an address in it); its OpenAI session id."""
    key = await gov.key(key_alias="warmup")
    async with gov.connect(key) as ws:
        events = await text_turn(ws, "Hello, write to ada.lovelace@example.com")
    await asyncio.sleep(0.1)
    await gov.flush()
    return str(next(e["session"]["id"] for e in events if e["type"] == "session.created"))


async def _transcript(page: Page, session: str) -> None:
    """The session's transcript, redacted, looked up by its OpenAI session id."""
    await page.run(page.fill, "transcript-form", {"session": session})
    state = await page.until(lambda s: s["transcript"] and s["transcript"]["turns"], "the transcript")
    assert [t["role"] for t in state["transcript"]["turns"]] == ["user", "assistant"]
    shown = await page.run(page.text, "#transcript-turns")
    assert "user: Hello, write to [EMAIL]" in shown and "ada.lovelace" not in shown
    assert "warmup" in await page.run(page.text, "#transcript-note")


async def _drive(gov: Gov, page: Page, tmp_path: Path) -> None:
    await page.run(page.driver.get, f"{gov.url}/ui")
    await page.run(page.click, "#signin button[type=submit]")  # nothing typed: still signed out
    assert not (await page.run(page.state))["signedIn"]
    await page.run(lambda: page.driver.find_element("id", "master-key").send_keys("sk-wrong-master-key-0000"))
    await page.run(page.click, "#signin button[type=submit]")
    await page.until(lambda s: s["lastError"] and "Sign-in failed" in s["lastError"], "the refused sign-in")
    await page.run(lambda: page.driver.find_element("id", "master-key").send_keys(MASTER))
    await page.run(page.click, "#signin button[type=submit]")
    state = await page.until(lambda s: s["signedIn"] and s["chart"]["drawn"], "the console")
    assert [k["key_alias"] for k in state["keys"]] == ["warmup"]
    assert state["chart"]["series"][0] == {"model": "gpt-realtime", "color": "#e4572e"}
    assert max(state["chart"]["totals"]) > 0

    # a team and a key in it, with the forms
    await page.run(page.fill, "team-form", {"team_id": "ui-team", "team_alias": "UI team", "max_budget": "5"})
    await page.until(lambda s: any(t["team_id"] == "ui-team" for t in s["teams"]), "the new team")
    await page.run(page.fill, "key-form", {"key_alias": "ui-key", "team_id": "ui-team", "models": "gpt-realtime"})
    # the list is refreshed before the new key is shown (app.js: act, then showKey): wait for both
    state = await page.until(lambda s: any(k["key_alias"] == "ui-key" for k in s["keys"]) and s["newKey"],
                             "the new key")
    created = state["newKey"]
    assert created.startswith("sk-") and await page.run(page.text, "#new-key-value") == created
    info = await gov.ok("GET", "/key/info", params={"key": created})
    assert info["info"]["team_id"] == "ui-team" and info["info"]["models"] == ["gpt-realtime"]
    token = info["info"]["token"]

    # edit the team, block and regenerate the key, with the buttons
    await page.run(page.click, "tr[data-team='ui-team'] button[data-action=edit]")
    await page.run(page.fill, "team-form", {"max_budget": "7.5"})
    await page.until(lambda s: any(t["max_budget"] == 7.5 for t in s["teams"]), "the edited team")
    await page.run(page.click, f"tr[data-token='{token}'] button[data-action=block]")
    await page.until(lambda s: any(k["token"] == token and k["blocked"] for k in s["keys"]), "the blocked key")
    assert "blocked" in await page.run(page.text, f"tr[data-token='{token}']")
    assert (await gov.refused(created))[1]["code"] == "key_blocked"
    await page.run(page.click, f"tr[data-token='{token}'] button[data-action=unblock]")
    await page.until(lambda s: any(k["token"] == token and not k["blocked"] for k in s["keys"]), "the unblocked key")
    await page.run(page.click, f"tr[data-token='{token}'] button[data-action=regenerate]")
    state = await page.until(lambda s: s["newKey"] != created, "the regenerated key")
    assert (await gov.refused(created))[0] == 401
    regenerated = state["newKey"]

    # a live session appears; its End button ends it
    async with gov.connect(regenerated) as ws:
        await text_turn(ws)
        state = await page.until(lambda s: len(s["sessions"]) == 1, "the live session")
        session_id = state["sessions"][0]["session_id"]
        await page.run(page.click, f"tr[data-session='{session_id}'] button[data-action=end]")
        events = await until_closed(ws, timeout=10)
        assert ws.close_code == 4003
    assert any(e["type"] == "error" and e["error"]["code"] == "session_terminated" for e in events)
    state = await page.until(lambda s: any(e["code"] == "session_terminated" for e in s["errors"]), "the error")
    assert "session_terminated" in await page.run(page.text, "#error-rows")
    assert MASTER not in await page.run(lambda: page.driver.page_source)

    # the chart draws: the first model's colour is inside the canvas
    await page.run(lambda: page.driver.execute_script("document.getElementById('chart').scrollIntoView()"))
    png = await page.run(page.driver.get_screenshot_as_png)
    (tmp_path / "admin.png").write_bytes(png)
    rect = await page.run(lambda: page.driver.execute_script(
        "const r = document.getElementById('chart').getBoundingClientRect();"
        "return [r.left, r.top, r.right, r.bottom];"))
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    left, top, right, bottom = (int(v) for v in rect)
    coloured = (np.abs(shot - np.array(FIRST_SERIES)) <= 6).all(axis=2)
    assert coloured[top:bottom, left:right].sum() > 200, "the chart's bars are drawn"
    assert coloured[:top, :].sum() + coloured[bottom:, :].sum() <= 400  # elsewhere only the legend swatch
