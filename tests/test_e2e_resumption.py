"""Sessions that outlive the Gemini connection (issue 8 §3), end to end: the openai SDK -> livegate -> a
simulator whose connections live about a second, send goAway, issue resumption handles and honour them."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import refusal, serve
from tests.test_e2e_live import ask, client, collect, live_config

TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@contextlib.asynccontextmanager
async def livegate_on(sim: GeminiLiveSimulator, model: str = "gemini-3.8-live") -> AsyncIterator[Any]:
    """A livegate whose switch margin suits the simulator's short connections; yields an SDK connection."""
    app = create_app(live_config(sim.url, model), simulator_chunk_delay=0)
    gateway = app.state.gateway
    gateway.resumption = dataclasses.replace(gateway.resumption, switch_margin_s=0.2)
    async with serve(app) as url, client(url.replace("http", "ws") + "/v1").realtime.connect(
            model="gpt-realtime") as conn:
        yield conn


def answer(events: list[Any]) -> str:
    return next(e.text for e in events if e.type == "response.output_text.done")


async def after_rate_limits(conn: Any) -> Any:
    """The next event after the rate_limits.updated that follows each response.done (OpenAI's order)."""
    event = await conn.recv()
    return await conn.recv() if event.type == "rate_limits.updated" else event


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_conversation_lives_through_three_go_aways() -> None:
    async with GeminiLiveSimulator(chunk_delay=0, connection_lifetime=0.9, go_away_lead=0.6) as sim, \
            livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        said = ["My name is Ada", "I live in Paris", "I like tea"]
        everything: list[Any] = []
        for index, text in enumerate(said):
            everything += await ask(conn, text)
            await wait_for(lambda index=index: len(sim.sessions) >= index + 2)  # goAway came, livegate moved
        final = await ask(conn, "What did I say before?")
        everything += final
    assert answer(final) == "[livegate simulator] Before this you said: " + " | ".join(said)
    assert len(sim.sessions) >= 4
    assert all(s.resumed_from for s in sim.sessions[1:4]), "each new connection resumed the session"
    assert all(s.close_code is None for s in sim.sessions[:3]), "livegate moved before Gemini closed"
    assert not [e for e in everything if e.type == "error"]
    # Nothing lost or duplicated: one user item and one response per question, each answer once.
    added = [e.item for e in everything if e.type == "conversation.item.added"]
    users = [item.content[0].text for item in added if item.role == "user"]
    assert users == [*said, "What did I say before?"]
    dones = [e.response for e in everything if e.type == "response.done"]
    assert len(dones) == 4 and len({r.id for r in dones}) == 4 and all(r.status == "completed" for r in dones)
    asked = [m for s in sim.sessions for m in s.received if "clientContent" in m and m["clientContent"].get("turns")]
    assert [m["clientContent"]["turns"][0]["parts"][0]["text"] for m in asked] == [*said, "What did I say before?"]


async def test_go_away_during_a_tool_call_waits_for_the_handle_after_the_output() -> None:
    async with GeminiLiveSimulator(chunk_delay=0, connection_lifetime=3.0, go_away_lead=2.5) as sim, \
            livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [TOOL]})
        await ask(conn, "My name is Ada")
        call_events = await ask(conn, "Please call get_weather for Paris")
        call = next(e for e in call_events if e.type == "response.function_call_arguments.done")
        await wait_for(lambda: any("goAway" in f for f in sim.sessions[0].sent))  # goAway while the call waits
        assert len(sim.sessions) == 1, "no switch while the tool call's output is pending"
        await conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                  "output": '{"temperature_c": 21}'})
        await conn.response.create()
        result = await collect(conn)
        await wait_for(lambda: len(sim.sessions) == 2)
        final = await ask(conn, "What did I say before?")
    assert answer(result) == '[livegate simulator] The tool get_weather returned: {"output": {"temperature_c": 21}}'
    assert any("toolResponse" in m for m in sim.sessions[0].received), "the output went to the session that called"
    handle_after_output = sim.sessions[0].sent[-1]["sessionResumptionUpdate"]["newHandle"]
    assert sim.sessions[1].resumed_from == handle_after_output
    assert sim.sessions[0].close_code is None, "livegate moved before Gemini closed"
    assert answer(final).endswith("My name is Ada | Please call get_weather for Paris")


async def test_a_1011_is_followed_by_a_fresh_session_reseeded_with_the_conversation() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim, livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        first = await ask(conn, "My name is Ada")
        await sim.sessions[0].abort(1011, "Internal error encountered.")
        await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None)
        final = await ask(conn, "What did I say before?")
    assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"
    fresh = sim.sessions[1]
    assert fresh.resumed_from is None and fresh.setup["historyConfig"] == {"initialHistoryInClientContent": True}
    history = fresh.received[1]["clientContent"]
    assert history["turnComplete"] is True
    assert [t["parts"][0]["text"] for t in history["turns"]] == ["My name is Ada", answer(first)]


async def test_a_dropped_connection_is_resumed_with_the_handle() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim, livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "My name is Ada")
        await sim.sessions[0].abort(1006)
        await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None)
        final = await ask(conn, "What did I say before?")
    assert sim.sessions[1].resumed_from == "sim-handle-1"
    assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"


async def test_when_no_new_session_can_be_had_the_client_is_told() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim, livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "My name is Ada")
        await sim.stop()  # the connection ends (1001) and there is nothing to reconnect to
        events = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async for event in conn:
                events.append(event)
    assert events[-1].type == "error" and events[-1].error.code == "upstream_unavailable"
    assert closed.value.rcvd.code == 1014


async def test_mid_session_instructions_go_through_context_update() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim, livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "My name is Ada")
        await conn.session.update(session={"type": "realtime", "instructions": "Answer in French."})
        updated = await after_rate_limits(conn)
        final = await ask(conn, "What did I say before?")
    assert updated.type == "session.updated" and updated.session.instructions == "Answer in French."
    assert len(sim.sessions) == 1, "no new connection"
    update = next(m["contextUpdate"] for m in sim.sessions[0].received if "contextUpdate" in m)
    assert update == {"systemInstruction": {"parts": [{"text": "Answer in French."}]}}
    assert answer(final).endswith("said: My name is Ada")


async def test_mid_session_voice_change_resumes_with_a_new_setup() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim, livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "My name is Ada")
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "coral"}}})
        updated = await after_rate_limits(conn)
        await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None)
        final = await ask(conn, "What did I say before?")
    assert updated.type == "session.updated" and updated.session.audio.output.voice == "coral"
    setup = sim.sessions[1].setup
    assert setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Aoede"
    assert sim.sessions[1].resumed_from == "sim-handle-1"
    assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"


async def test_a_client_that_drops_reattaches_through_the_sdk_reconnect_hook() -> None:
    session_id: list[str] = []

    def on_reconnecting(event: Any) -> dict[str, Any]:  # the SDK does not resend session.update
        return {"extra_query": {**dict(event.extra_query or {}), "session_id": session_id[0]}}

    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        app = create_app(live_config(sim.url), simulator_chunk_delay=0)
        async with serve(app) as url, client(url.replace("http", "ws") + "/v1").realtime.connect(
                model="gpt-realtime", on_reconnecting=on_reconnecting) as conn:
            created = await conn.recv()
            session_id.append(created.session.id)
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.recv()
            await ask(conn, "My name is Ada")
            dropped = conn._connection
            dropped.transport.abort()  # the client's network drops (1006 on both sides)
            reading = asyncio.create_task(collect(conn))  # the SDK notices while reading, and reconnects
            await wait_for(lambda: conn._connection is not dropped and not conn._is_reconnecting)
            await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What did I say before?"}]})
            await conn.response.create()
            final = await reading
        assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"
        assert final[-1].response.output[0].content[0].type == "output_text", "its configuration is intact"
        assert len(sim.sessions) == 1, "the same Gemini session served the reattached client"
        assert not app.state.gateway.detached


async def test_without_a_reattach_the_upstream_closes_after_the_grace_period() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        config = dataclasses.replace(live_config(sim.url), reattach_grace_s=0.3)
        app = create_app(config, simulator_chunk_delay=0)
        async with serve(app) as url, client(url.replace("http", "ws") + "/v1").realtime.connect(
                model="gpt-realtime") as conn:
            created = await conn.recv()
            await ask(conn, "My name is Ada")
            conn._connection.transport.abort()
            await wait_for(lambda: created.session.id in app.state.gateway.detached)
            await wait_for(lambda: sim.sessions[0].connection is None)  # Gemini's connection was closed
            assert not app.state.gateway.detached
            stale = url.replace("http", "ws") + f"/v1/realtime?model=gpt-realtime&session_id={created.session.id}"
            status, error = await refusal(
                websockets.connect(stale, additional_headers={"Authorization": "Bearer sk-livegate-test"}))
            assert status == 404 and error["code"] == "session_not_found"


async def test_a_stale_handle_is_not_used() -> None:
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        app = create_app(live_config(sim.url), simulator_chunk_delay=0)
        app.state.gateway.resumption = dataclasses.replace(app.state.gateway.resumption, handle_ttl_s=0)
        async with serve(app) as url, client(url.replace("http", "ws") + "/v1").realtime.connect(
                model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await ask(conn, "My name is Ada")
            await sim.sessions[0].abort(1006)
            await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None)
            final = await ask(conn, "What did I say before?")
    assert sim.sessions[1].resumed_from is None and "historyConfig" in sim.sessions[1].setup
    assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"


async def test_input_during_a_switch_is_queued_and_audio_beyond_two_seconds_dropped() -> None:
    chunk = base64.b64encode(bytes(48000 // 10)).decode()  # 100 ms of 24 kHz PCM16
    async with GeminiLiveSimulator(chunk_delay=0) as sim, livegate_on(sim) as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        await ask(conn, "My name is Ada")
        sim.setup_delay = 0.5  # the new connection takes a while
        await conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "coral"}}})
        await conn.recv()  # session.updated; the switch starts
        await wait_for(lambda: len(sim.sessions) == 2)
        for _ in range(30):  # 3 s of audio while switching
            await conn.input_audio_buffer.append(audio=chunk)
        await conn.conversation.item.create(item={"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What did I say before?"}]})
        errors = []
        async for event in conn:
            if event.type == "error":
                errors.append(event.error)
            if event.type == "conversation.item.done":
                break
        await conn.response.create()
        final = await collect(conn)
    dropped = sum(int(e.message.split(" ms")[0]) for e in errors if e.code == "input_audio_dropped")
    assert dropped == 1000, [e.message for e in errors]
    received = sim.sessions[1].received
    audio = [m for m in received if "audio" in m.get("realtimeInput", {})]
    assert len(audio) == 20, "the newest 2 s of audio reached the new connection, in order"
    texts = [m for m in received if m.get("clientContent", {}).get("turns")]
    assert received.index(audio[-1]) < received.index(texts[0]), "input keeps its order"
    assert answer(final) == "[livegate simulator] Before this you said: My name is Ada"
