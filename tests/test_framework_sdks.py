"""The SDKs' own paths that tests/test_e2e*.py and tests/test_passthrough.py do not cover (issue 10 §3): the
openai SDK's beta client through a tool round trip, its GA client reconnecting by itself when a livegate
instance restarts, and google-genai through a tool round trip on the passthrough."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from google import genai
from google.genai import types as genai_types

from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.frameworks_support import KEY, TOOL_PROMPT, gateway, no_errors
from tests.recording_proxy import recording_proxy
from tests.support import serve
from tests.test_e2e_live import client, collect, live_config
from tests.test_passthrough import MODEL, PREFIX
from tests.test_passthrough import gateway as passthrough_gateway
from tests.test_passthrough import sim as sim  # fixtures
from tests.test_passthrough import tls as tls

TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


async def test_beta_client_tool_round_trip() -> None:
    async with gateway() as gw, client(gw.ws + "/v1").beta.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"modalities": ["text"], "tools": [TOOL]})
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": TOOL_PROMPT}]})
        await conn.response.create()
        first = await collect(conn)
        call = next(e for e in first if e.type == "response.function_call_arguments.done")
        item = next(o for o in first[-1].response.output if o.type == "function_call")
        assert (item.name, call.arguments) == ("get_weather", '{"city":"sample"}')
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                  "output": '{"temperature_c": 21}'})
        await conn.response.create()
        second = await collect(conn)
    answer = next(e.text for e in second if e.type == "response.text.done")
    assert answer == '[livegate simulator] The tool get_weather returned: {"output": {"temperature_c": 21}}'
    no_errors(gw.recording)


async def test_ga_client_reconnects_by_itself_when_livegate_restarts() -> None:
    """Two instances behind one address (a balancer, or a restart): the first shuts down, closing its client
    with 1012; the SDK reconnects on its own and gets a working (new) session from the second."""
    async with GeminiLiveSimulator(chunk_delay=0) as sim, contextlib.AsyncExitStack() as first:
        first_url = await first.enter_async_context(serve(create_app(live_config(sim.url), simulator_chunk_delay=0)))
        async with serve(create_app(live_config(sim.url), simulator_chunk_delay=0)) as second_url, \
                recording_proxy(first_url.replace("http", "ws")) as (ws, recording):
            reconnects: list[Any] = []
            async with client(ws + "/v1").realtime.connect(model="gpt-realtime",
                                                           on_reconnecting=reconnects.append) as conn:
                first_created = await conn.recv()
                await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                await conn.recv()
                await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Hello there"}]})
                await conn.response.create()
                await collect(conn)
                recording.upstream = second_url.replace("http", "ws")
                reading = asyncio.create_task(collect(conn, until="session.created"))
                await first.aclose()  # the first instance shuts down
                second_created = (await reading)[-1]
                # The SDK does not resend session.update: the application does, as after any new session.
                await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
                await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Still there?"}]})
                await conn.response.create()
                final = await collect(conn)
    assert [r.close_code for r in reconnects] == [1012]
    assert recording.connections == 2 and second_created.session.id != first_created.session.id
    assert next(e.text for e in final if e.type == "response.output_text.done").endswith("You said: Still there?")
    no_errors(recording)


async def test_google_genai_tool_round_trip_on_the_passthrough(sim: GeminiLiveSimulator,
                                                               tls: dict[str, Path]) -> None:
    config = {"model_list": [{"model_name": MODEL, "litellm_params": {
        "model": f"gemini/{MODEL}", "api_key": "AIza-server-key", "api_base": sim.url}}],
        "general_settings": {"master_key": KEY}}
    weather = genai_types.FunctionDeclaration(name="get_weather", description="Weather for a city", parameters={
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]})
    async with passthrough_gateway(config, **tls) as served:
        sdk = genai.Client(api_key=KEY, http_options={"base_url": served.url + "/gemini/live"})
        async with sdk.aio.live.connect(model=MODEL, config={
                "response_modalities": ["TEXT"], "tools": [genai_types.Tool(function_declarations=[weather])]}) as live:
            await live.send_client_content(turns={"role": "user", "parts": [{"text": TOOL_PROMPT}]})
            async with asyncio.timeout(5):
                async for message in live.receive():
                    if message.tool_call:
                        break
            (call,) = message.tool_call.function_calls or []
            assert (call.name, call.args) == ("get_weather", {"city": "sample"})
            await live.send_tool_response(function_responses=[genai_types.FunctionResponse(
                id=call.id, name=call.name, response={"temperature_c": 21})])
            async with asyncio.timeout(5):
                text = "".join([m.text or "" async for m in live.receive()])
    assert text == f'{PREFIX} The tool get_weather returned: {{"temperature_c": 21}}'
