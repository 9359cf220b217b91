"""Scripts written for LiteLLM's proxy run unchanged against livegate with `litellm_compat` on (README
"LiteLLM compatibility"), and over TLS.

The client scripts below follow the seed examples of LiteLLM's Gemini realtime docs, rewritten here
with the same client event sequence: the raw-websockets text script (a user item, no response.create),
the tool-calling loop (nested chat-completions tools, `name` read from function_call_arguments.done),
the Node `ws` script (response.create with modalities and instructions, beta header; replayed here
with Python websockets: its frames are the same), and the openai SDK's beta client given a `base_url`,
which dials wss://.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from livegate.simulator.script import PREFIX, called_function
from tests.support import serve

KEY = "sk-1234"


def compat_config(sim_url: str, *, globally: bool = True, per_model: bool | None = None) -> Any:
    params: dict[str, Any] = {"model": "gemini/gemini-3.8-live", "api_key": "AIza-compat", "api_base": sim_url}
    if per_model is not None:
        params["litellm_compat"] = per_model
    return parse_config({
        "model_list": [{"model_name": "gemini-live", "litellm_params": params, "model_info": {"mode": "realtime"}}],
        "general_settings": {"master_key": KEY, "litellm_compat": globally}})


@pytest.fixture
async def sim() -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator(chunk_delay=0) as simulator:
        yield simulator


@pytest.fixture
async def proxy(sim: GeminiLiveSimulator) -> AsyncIterator[str]:
    async with serve(create_app(compat_config(sim.url), simulator_chunk_delay=0)) as url:
        yield url.replace("http", "ws")


async def _events_until(ws: Any, last: str) -> list[dict[str, Any]]:
    events = []
    async for raw in ws:
        event = json.loads(raw)
        events.append(event)
        assert event["type"] != "error", event
        if event["type"] == last:
            return events
    raise AssertionError(f"closed before {last}")


async def test_text_script_without_response_create(proxy: str) -> None:
    """No header, no session.update, a user item and no response.create: answered, in text, beta names."""
    async with websockets.connect(f"{proxy}/realtime?model=gemini-live", additional_headers={"api-key": KEY}) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created" and created["session"]["modalities"] == ["text"]
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Say hello in one sentence."}]}}))
        events = await _events_until(ws, "response.done")
    text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
    assert text == f"{PREFIX} You said: Say hello in one sentence."
    assert not any(e["type"].startswith("response.audio") for e in events)


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a location.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                    "unit": {"type": "string", "enum": ["fahrenheit", "celsius"]}},
                   "required": ["location"]}}}]


def get_weather(location: str, unit: str = "fahrenheit") -> dict[str, Any]:
    return {"location": location, "temperature": 72 if unit == "fahrenheit" else 22, "unit": unit}


async def test_tool_calling_loop(proxy: str) -> None:
    """The documented loop: a beta-shaped session.update with nested tools and no header, a question,
    response.create; on function_call_arguments.done it reads `name`, runs the tool, sends the output and
    response.create; it stops at the answer's response.done. No error on the way."""
    headers = {"Authorization": f"Bearer {KEY}", "X-Serverless-Authorization": f"Bearer {KEY}"}
    async with websockets.connect(f"{proxy}/v1/realtime?model=gemini-live", additional_headers=headers) as ws:
        json.loads(await ws.recv())  # session.created
        await ws.send(json.dumps({"type": "session.update", "session": {
            "modalities": ["text"], "tools": TOOLS, "tool_choice": "auto"}}))
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "What's the weather in San Francisco?"}]}}))
        await ws.send(json.dumps({"type": "response.create"}))
        answer, calls, types = "", [], []
        async for raw in ws:
            event = json.loads(raw)
            types.append(event["type"])
            assert event["type"] != "error", event
            if event["type"] == "response.function_call_arguments.done":
                result = {"get_weather": get_weather}[event["name"]](**json.loads(event["arguments"]))
                calls.append(event["name"])
                await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                    "type": "function_call_output", "call_id": event["call_id"], "output": json.dumps(result)}}))
                await ws.send(json.dumps({"type": "response.create"}))
            elif event["type"] == "response.text.delta":
                answer += event["delta"]
            elif event["type"] == "response.done" and answer:
                break
    assert "session.updated" in types and calls == ["get_weather"]
    assert answer.startswith(f"{PREFIX} The tool get_weather returned:") and '"temperature": 72' in answer


async def test_node_script_event_sequence(proxy: str) -> None:
    """LiteLLM's Node `ws` script: headers api-key and OpenAI-Beta, then one response.create carrying
    modalities and instructions (per-response settings, applied through contextUpdate), nothing else."""
    headers = {"api-key": KEY, "OpenAI-Beta": "realtime=v1"}
    async with websockets.connect(f"{proxy}/v1/realtime?model=gemini-live", additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await ws.send(json.dumps({"type": "response.create", "response": {
            "modalities": ["text"], "instructions": "Please assist the user."}}))
        events = await _events_until(ws, "response.done")
    assert events[0]["type"] == "response.created"
    assert events[-1]["response"]["status"] == "completed"


def _self_signed(folder: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


async def test_openai_sdk_beta_client_with_base_url_over_tls(sim: GeminiLiveSimulator, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteLLM's documented openai SDK form: `base_url="http://HOST:PORT"`, which the beta client dials as
    wss://HOST:PORT/realtime. livegate serving TLS (`--ssl-certfile/--ssl-keyfile`, the same uvicorn
    options) answers it; the client trusts the test's self-signed certificate through SSL_CERT_FILE."""
    certfile, keyfile = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", certfile)
    assert ssl.create_default_context().cert_store_stats()["x509"] >= 1
    app = create_app(compat_config(sim.url), simulator_chunk_delay=0)
    async with serve(app, ssl_certfile=certfile, ssl_keyfile=keyfile) as url:
        client = AsyncOpenAI(api_key=KEY, base_url=url.replace("127.0.0.1", "localhost"))
        async with client.beta.realtime.connect(model="gemini-live") as conn:
            await conn.session.update(session={"modalities": ["text"]})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Say hello!"}]})
            await conn.response.create()
            text = ""
            async for event in conn:
                assert event.type != "error", event
                if event.type == "response.text.delta":
                    text += event.delta
                elif event.type == "response.done":
                    break
    assert text == f"{PREFIX} You said: Say hello!"


async def test_the_setting_per_model_entry_overrides_the_global_one(sim: GeminiLiveSimulator) -> None:
    app = create_app(compat_config(sim.url, globally=True, per_model=False), simulator_chunk_delay=0)
    async with serve(app) as url, websockets.connect(
            url.replace("http", "ws") + "/v1/realtime?model=gemini-live", additional_headers={"api-key": KEY}) as ws:
        created = json.loads(await ws.recv())
        assert created["session"]["type"] == "realtime", "GA dialect, as without the setting"
        assert created["session"]["output_modalities"] == ["audio"]


def test_the_simulator_calls_a_tool_the_text_asks_for_by_topic() -> None:
    functions = {"get_weather": {}, "lookupOrder": {}}
    assert called_function("What's the weather in San Francisco?", functions) == "get_weather"
    assert called_function("Where is my order?", functions) == "lookupOrder"
    assert called_function("Hello there", functions) is None
