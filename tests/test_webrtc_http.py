"""`POST /v1/realtime/calls` and `.../hangup` at the HTTP level: what the openai SDK sends and gets, every
refusal as a JSON error with its status, keys and limits as for a WebSocket session, a caller that never
connects, settings checked at load, and a base start-up that never loads aiortc."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from livegate.config import ConfigError, parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import serve
from tests.webrtc_support import LOOPBACK_SETTINGS, Caller

MASTER = "sk-master-calls"
FAKE_OFFER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
              "a=rtpmap:111 opus/48000/2\r\n")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    async with GeminiLiveSimulator(chunk_delay=0, api_key=None) as sim:
        params = {"model": "gemini/gemini-3.8-live", "api_key": "AIza-calls", "api_base": sim.url}
        config = parse_config({
            "model_list": [{"model_name": "gpt-realtime", "litellm_params": params},
                           {"model_name": "gpt-realtime-mini", "litellm_params": params}],
            "general_settings": {"master_key": MASTER},
            "livegate_settings": {"store_path": str(tmp_path / "livegate.db"), "webrtc_max_calls": 2,
                                  "webrtc_connect_timeout_s": 1, **LOOPBACK_SETTINGS}})
        app = create_app(config, simulator_chunk_delay=0)
        async with serve(app) as url, httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {MASTER}"}) as http:
            key = (await http.post("/key/generate", json={"models": ["gpt-realtime"],
                                                          "max_parallel_requests": 1})).json()["key"]
            yield {"url": url, "http": http, "app": app, "key": key}


async def _post(gateway: dict[str, Any], key: str | None, *, body: bytes | str = FAKE_OFFER,
                content_type: str = "application/sdp", model: str | None = "gpt-realtime") -> httpx.Response:
    headers = {"Content-Type": content_type, **({"Authorization": f"Bearer {key}"} if key else {})}
    async with httpx.AsyncClient(base_url=gateway["url"]) as http:
        return await http.post("/v1/realtime/calls", params={"model": model} if model else {}, content=body,
                               headers=headers)


def _error(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert error["message"], error
    return response.status_code, error["code"]


async def test_refusals_say_why_with_the_status(gateway: dict[str, Any]) -> None:
    key = gateway["key"]
    mini = (await gateway["http"].post("/v1/realtime/client_secrets", headers={"Authorization": f"Bearer {key}"},
                                       json={})).json()["value"]
    cases = [
        (await _post(gateway, None), (401, "invalid_api_key")),
        (await _post(gateway, "sk-nobody"), (401, "invalid_api_key")),
        (await _post(gateway, key, content_type="application/json", body="{}"), (415, "unsupported_media_type")),
        (await _post(gateway, key, body="hello"), (400, "invalid_offer")),
        (await _post(gateway, key, body=FAKE_OFFER.replace("opus", "PCMU")), (400, "invalid_offer")),
        (await _post(gateway, key, body=FAKE_OFFER + "a=x\r\n" * 60000), (413, "request_too_large")),
        (await _post(gateway, key, model=None), (400, "missing_model")),
        (await _post(gateway, key, model="gpt-nothing"), (404, "model_not_found")),
        (await _post(gateway, key, model="gpt-realtime-mini"), (403, "model_not_allowed")),
        # the client secret of a key limited to gpt-realtime cannot open a call on another model
        (await _post(gateway, mini, model="gpt-realtime-mini"), (403, "model_not_allowed")),
        # an offer that passes the checks but that WebRTC cannot apply (no ICE credentials, no fingerprint)
        (await _post(gateway, key), (400, "invalid_offer")),
        (await _post(gateway, key, content_type="multipart/form-data; boundary=x",
                     body=b'--x\r\nContent-Disposition: form-data; name="sdp"\r\n\r\n' + FAKE_OFFER.encode()
                     + b'\r\n--x\r\nContent-Disposition: form-data; name="session"\r\n\r\n{oops\r\n--x--\r\n'),
         (400, "invalid_json")),
    ]
    for response, expected in cases:
        assert _error(response) == expected, response.text
    # the failed offer released its admission: the key's one parallel call is free
    caller = Caller(gateway["url"], key)
    assert (await caller.connect()).status_code == 201
    await caller.hang_up()


async def test_the_openai_sdk_creates_and_hangs_up_a_call(gateway: dict[str, Any]) -> None:
    key = gateway["key"]
    caller = Caller(gateway["url"], key)
    offer = await caller.offer()
    sdk = AsyncOpenAI(api_key=key, base_url=gateway["url"] + "/v1")
    created = await sdk.realtime.calls.with_raw_response.create(sdp=offer, session={
        "type": "realtime", "model": "gpt-realtime", "instructions": "Talk like a pirate."})
    assert created.status_code == 201 and created.headers["content-type"].startswith("application/sdp")
    call_id = created.headers["location"].rsplit("/", 1)[-1]
    from aiortc import RTCSessionDescription

    assert caller.pc is not None
    await caller.pc.setRemoteDescription(RTCSessionDescription(sdp=created.text, type="answer"))
    updated = await caller.wait_for("session.updated", timeout=10)
    assert updated["session"]["instructions"] == "Talk like a pirate.", "the form's session applies to the call"
    # audio belongs on the media track: JSON audio on the data channel is refused by name
    caller.send({"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "a1"})
    async with asyncio.timeout(5):
        while not any(e["type"] == "error" for _, e in caller.events):
            await asyncio.sleep(0.05)
    error = next(e["error"] for _, e in caller.events if e["type"] == "error")
    assert error["code"] == "unsupported_event" and error["event_id"] == "a1"

    other = (await gateway["http"].post("/key/generate", json={})).json()["key"]
    with pytest.raises(Exception) as refused:
        await AsyncOpenAI(api_key=other, base_url=gateway["url"] + "/v1").realtime.calls.hangup(call_id)
    assert getattr(refused.value, "status_code", None) == 404, "another key cannot hang up this call"
    await sdk.realtime.calls.hangup(call_id)
    registry = gateway["app"].state.webrtc_calls
    async with asyncio.timeout(5):
        while registry.calls:
            await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        while caller.pc.connectionState != "closed":
            await asyncio.sleep(0.05)
    with pytest.raises(Exception) as gone:
        await sdk.realtime.calls.hangup(call_id)
    assert getattr(gone.value, "status_code", None) == 404
    await caller.hang_up()
    await gateway["app"].state.gateway.accounting.writer.flush()
    rows = (await gateway["http"].get("/spend/logs", params={"api_key": key})).json()
    assert [r["route"] for r in rows] == ["/v1/realtime/calls"]


async def test_an_offer_with_video_gets_audio_only(gateway: dict[str, Any]) -> None:
    caller = Caller(gateway["url"], gateway["key"], video=True)
    response = await caller.connect()
    assert response.status_code == 201
    audio, video = response.text.split("m=audio", 1)[1].split("m=video", 1)
    assert "a=sendrecv" in audio and "opus/48000" in audio and "PCMU" not in audio, "Opus only, both ways"
    assert "a=inactive" in video, "video is answered inactive: nothing sent, nothing decoded"
    await caller.wait_for("session.created", timeout=10)
    await caller.hang_up()


async def test_limits_hold_for_calls(gateway: dict[str, Any]) -> None:
    first, second = Caller(gateway["url"], gateway["key"]), Caller(gateway["url"], gateway["key"])
    assert (await first.connect()).status_code == 201
    assert _error(await second.connect()) == (429, "realtime_session_limit"), "max_parallel_requests: 1"
    third, fourth = Caller(gateway["url"], MASTER), Caller(gateway["url"], MASTER)
    assert (await third.connect()).status_code == 201
    refused = await fourth.connect()
    assert _error(refused) == (503, "calls_at_capacity") and refused.headers["retry-after"], "webrtc_max_calls: 2"
    for caller in (first, second, third, fourth):
        await caller.hang_up()


async def test_a_caller_that_never_connects_is_dropped(gateway: dict[str, Any]) -> None:
    caller = Caller(gateway["url"], gateway["key"])
    offer = await caller.offer()
    response = await _post(gateway, gateway["key"], body=offer)
    assert response.status_code == 201  # ...and the answer is never applied
    registry = gateway["app"].state.webrtc_calls
    async with asyncio.timeout(15):  # webrtc_connect_timeout_s: 1 (a loaded machine may take a while to close)
        while registry.calls:
            await asyncio.sleep(0.05)
    await caller.hang_up()
    await gateway["app"].state.gateway.accounting.writer.flush()
    rows = (await gateway["http"].get("/spend/logs", params={"api_key": gateway["key"]})).json()
    assert rows[0]["close_code"] == 1006 and rows[0]["status"] == "failure" and not rows[0]["total_tokens"]


async def test_without_the_webrtc_extra_calls_are_501(gateway: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("livegate.webrtc.routes.webrtc_available", lambda: False)
    status, code = _error(await _post(gateway, gateway["key"]))
    assert (status, code) == (501, "webrtc_unavailable")


def test_start_up_never_loads_aiortc() -> None:
    probe = ("import sys; from livegate.config import parse_config; from livegate.server import create_app; "
             "create_app(parse_config({'livegate_settings': {'webrtc_udp_ports': '40000-40100'}})); "
             "print(sorted(m for m in ('aiortc', 'av', 'aioice', 'pylibsrtp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("settings", "message"), [
    ({"webrtc_udp_ports": "50000-40000"}, "webrtc_udp_ports: expected ports"),
    ({"webrtc_udp_ports": 5}, "webrtc_udp_ports: expected a range"),
    ({"webrtc_host_addresses": ["localhost"]}, "'localhost' is not an IP address"),
    ({"webrtc_ice_servers": [{"urls": "http://stun"}]}, "is not a stun:"),
    ({"webrtc_ice_servers": [{"urls": "turn:turn.example.org"}]}, "needs a username and a credential"),
    ({"webrtc_max_calls": 0}, "webrtc_max_calls: expected a positive integer"),
    ({"webrtc_conect_timeout_s": 1}, "did you mean `webrtc_connect_timeout_s`"),
])
def test_webrtc_settings_are_checked_at_load(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as error:
        parse_config({"livegate_settings": settings})
    assert "secret" not in str(error.value)


def test_a_turn_credential_never_shows() -> None:
    config = parse_config({"livegate_settings": {"webrtc_ice_servers": [
        {"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "hunter2-turn"}]}})
    assert "hunter2" not in repr(config.webrtc) and config.webrtc.ice_servers[0].credential == "hunter2-turn"
