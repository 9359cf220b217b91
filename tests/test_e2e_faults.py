"""Gemini's faults, end to end (issue 17 §1, §3; issue 18 items 5 and 6): the openai SDK -> livegate -> the
simulator with a fault switched on. Each fault costs the user at most the turn in flight, which is answered
anyway on the same socket: no repeated question, no dead session, no second answer."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import collect, serve
from tests.test_e2e_live import KEY, ask, client, pcm16
from tests.test_e2e_resumption import TOOL, answer, wait_for

PREFIX = "[livegate simulator]"
pytestmark = pytest.mark.asyncio(loop_scope="module")


def config(sim: GeminiLiveSimulator, model: str = "gemini-3.8-live", **settings: Any) -> Any:
    params = {"model": f"gemini/{model}", "api_key": "AIza-e2e", "api_base": sim.url}
    return parse_config({"model_list": [{"model_name": "gpt-realtime", "litellm_params": params}],
                         "general_settings": {"master_key": KEY},
                         "livegate_settings": {"stall_timeout_ms": 400, "silent_audio_ms": 200, **settings}})


@dataclasses.dataclass
class Served:
    conn: Any
    app: Any
    url: str

    async def recoveries(self) -> dict[str, float]:
        """livegate_recoveries_total by kind, as /metrics says (counted since the test began)."""
        counted = {}
        for kind, value in (await _recoveries(self.url)).items():
            if value - self.before.get(kind, 0.0):
                counted[kind] = value - self.before.get(kind, 0.0)
        return counted

    before: dict[str, float] = dataclasses.field(default_factory=dict)


async def _recoveries(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})).text
    counted = {}
    for line in text.splitlines():
        if line.startswith("livegate_recoveries_total{"):
            labels, value = line.rsplit(" ", 1)
            counted[labels.split('kind="')[1].split('"')[0]] = float(value)
    return counted


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[tuple[GeminiLiveSimulator, Any, str]]:
    """One simulator and one livegate for the module (creating an app costs a second or two); each test gets
    the simulator as new (fresh_sim) and its own SDK connection."""
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        app = create_app(config(sim), simulator_chunk_delay=0)
        async with serve(app) as url:
            yield sim, app, url


@pytest.fixture
def sim(stack: tuple[GeminiLiveSimulator, Any, str]) -> GeminiLiveSimulator:
    simulator = stack[0]
    simulator.sessions.clear()
    simulator.faults.clear()
    simulator.issue_handles, simulator.setup_delay = True, 0.0
    return simulator


@contextlib.asynccontextmanager
async def livegate(stack: tuple[GeminiLiveSimulator, Any, str]) -> AsyncIterator[Served]:
    _, app, url = stack
    async with client(url.replace("http", "ws") + "/v1").realtime.connect(model="gpt-realtime") as conn:
        yield Served(conn, app, url, await _recoveries(url))


async def text_session(conn: Any, **session: Any) -> None:
    await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], **session})


def responses(events: list[Any]) -> list[Any]:
    return [e.response for e in events if e.type == "response.done"]


def no_1007(sim: GeminiLiveSimulator) -> bool:
    return all(s.close_code != 1007 for s in sim.sessions)


async def test_a_1011_mid_answer_is_answered_anyway_on_a_fresh_session(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn)
        await ask(lg.conn, "My name is Ada")
        sim.inject("close_mid_answer")
        cut = await ask(lg.conn, "What did I say before?")
        again = await collect(lg.conn)  # the answer follows by itself: the client asked nothing more
        final = await ask(lg.conn, "What did I say before?")
        counted = await lg.recoveries()
    [failed] = responses(cut)
    assert failed.status == "failed" and failed.status_details.error.code == "upstream_reconnected"
    [answered] = responses(again)
    assert answered.status == "completed"
    assert answer(again) == f"{PREFIX} Before this you said: My name is Ada"
    fresh = sim.sessions[1]
    history = fresh.received[1]["clientContent"]["turns"]
    assert [t["role"] for t in history] == ["user", "model"], "the cut partial answer is left out"
    assert fresh.received[2]["clientContent"]["turns"][0]["parts"][0]["text"] == "What did I say before?"
    assert answer(final).endswith("My name is Ada | What did I say before?"), "no question repeated or lost"
    assert counted == {"reseeded": 1.0}


async def test_a_short_go_away_during_a_tool_call_keeps_the_output_on_the_calling_connection(
        sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn, tools=[TOOL])
        await ask(lg.conn, "My name is Ada")
        call = next(e for e in await ask(lg.conn, "Please call get_weather for Paris")
                    if e.type == "response.function_call_arguments.done")
        await sim.sessions[0].go_away(2.0)  # shorter than switch_margin_s (10 s)
        await asyncio.sleep(1.2)  # the deadline (half of timeLeft) passes while the call waits
        assert len(sim.sessions) == 1
        await lg.conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                     "output": '{"temperature_c": 21}'})
        await lg.conn.response.create()
        result = await collect(lg.conn)
        await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None)
        final = await ask(lg.conn, "What did I say before?")
    assert answer(result) == f'{PREFIX} The tool get_weather returned: {{"output": {{"temperature_c": 21}}}}'
    assert any("toolResponse" in m for m in sim.sessions[0].received), "the output went to the calling session"
    assert not any("toolResponse" in m for m in sim.sessions[1].received)
    handle_after_output = [f for f in sim.sessions[0].sent if "sessionResumptionUpdate" in f][-1]
    assert sim.sessions[1].resumed_from == handle_after_output["sessionResumptionUpdate"]["newHandle"]
    assert answer(final).endswith("My name is Ada | Please call get_weather for Paris") and no_1007(sim)


async def test_a_tool_call_whose_connection_is_gone_is_answered_from_the_reseeded_history(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn, tools=[TOOL])
        await ask(lg.conn, "My name is Ada")
        call = next(e for e in await ask(lg.conn, "Please call get_weather for Paris")
                    if e.type == "response.function_call_arguments.done")
        await sim.sessions[0].go_away(0.3)
        await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None)
        await lg.conn.conversation.item.create(item={"type": "function_call_output", "call_id": call.call_id,
                                                     "output": '{"temperature_c": 21}'})
        await lg.conn.response.create()
        result = await collect(lg.conn)
    fresh = sim.sessions[1]
    assert fresh.resumed_from is None, "the handle predates the call"
    seeded = fresh.received[1]["clientContent"]["turns"]
    assert seeded[-1]["parts"][0]["functionCall"]["id"] == call.call_id, "the call is in the fresh history"
    given = fresh.received[2]["clientContent"]
    assert given["turns"][0]["parts"][0]["functionResponse"]["id"] == call.call_id and given["turnComplete"]
    assert answer(result) == f'{PREFIX} The tool get_weather returned: {{"output": {{"temperature_c": 21}}}}'
    assert no_1007(sim)


async def test_a_voice_change_with_no_handle_is_applied_through_a_fresh_session(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        sim.issue_handles = False
        await text_session(lg.conn)
        await ask(lg.conn, "My name is Ada")
        await lg.conn.session.update(session={"type": "realtime", "audio": {"output": {"voice": "coral"}}})
        await lg.conn.recv()
        await wait_for(lambda: len(sim.sessions) == 2 and sim.sessions[1].setup is not None, timeout=5)
        final = await ask(lg.conn, "What did I say before?")
    voice = sim.sessions[1].setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]
    assert voice == {"voiceName": "Aoede"} and sim.sessions[1].resumed_from is None
    assert answer(final) == f"{PREFIX} Before this you said: My name is Ada"


async def test_a_stall_is_asked_again_on_the_same_connection(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn)
        sim.inject("stall")
        started = time.monotonic()
        events = await ask(lg.conn, "hello")
        waited = time.monotonic() - started
        counted = await lg.recoveries()
    [done] = responses(events)
    assert done.status == "completed" and answer(events) == f"{PREFIX} You said: hello"
    assert waited >= 0.4 and len(sim.sessions) == 1
    assert counted == {"stall_reask": 1.0}


async def test_a_stall_that_asking_again_does_not_fix_moves_to_a_fresh_session_then_tells_the_client(
        sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn)
        await ask(lg.conn, "My name is Ada")
        sim.inject("stall", times=3)
        await lg.conn.conversation.item.create(item={"type": "message", "role": "user",
                                                     "content": [{"type": "input_text", "text": "hello"}]})
        await lg.conn.response.create()
        events = await collect(lg.conn, until="error")
        gave_up = await collect(lg.conn)
        final = await ask(lg.conn, "What did I say before?")
        counted = await lg.recoveries()
    assert events[-1].error.code == "upstream_stalled"
    [failed] = responses(gave_up)
    assert failed.status == "failed" and failed.status_details.error.code == "upstream_stalled"
    assert len(sim.sessions) == 2 and answer(final).startswith(f"{PREFIX} Before this you said: My name is Ada")
    assert counted == {"stall_reask": 1.0, "stall_reseed": 1.0, "stall_gave_up": 1.0}


async def test_empty_and_rejected_turns_are_asked_again_then_reseeded(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn)
        sim.inject("empty_turn")
        once = await ask(lg.conn, "hello")
        sim.inject("rejected", times=3)
        run = await ask(lg.conn, "hello again")
        counted = await lg.recoveries()
    assert [r.status for r in responses(once)] == ["completed"] and answer(once) == f"{PREFIX} You said: hello"
    assert [r.status for r in responses(run)] == ["completed"]
    assert answer(run) == f"{PREFIX} You said: hello again" and len(sim.sessions) == 2
    assert counted == {"empty_turn_reask": 3.0, "empty_turn_reseed": 1.0}


async def test_a_near_silent_answer_is_replaced_by_one_asked_again(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await lg.conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        sim.inject("silent_audio")
        cut = await ask(lg.conn, "Tell me a long story about the sea, the wind and the boats")
        again = await collect(lg.conn)
    [failed] = responses(cut)
    assert failed.status == "failed" and failed.status_details.error.code == "silent_audio"
    [answered] = responses(again)
    assert answered.status == "completed"
    audio = b"".join(base64.b64decode(e.delta) for e in again if e.type == "response.output_audio.delta")
    assert max(abs(int.from_bytes(audio[i:i + 2], "little", signed=True)) for i in range(0, 4800, 2)) > 2000
    assert len(sim.sessions) == 2


async def test_a_commit_under_server_vad_is_answered_where_audio_stream_end_does_not_end_the_turn(
        sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await lg.conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        speech = pcm16(0.6, 8000)  # no trailing silence: the client commits
        for start in range(0, len(speech), 9600):
            await lg.conn.input_audio_buffer.append(audio=base64.b64encode(speech[start:start + 9600]).decode())
        await lg.conn.input_audio_buffer.commit()
        events = await collect(lg.conn)
    assert answer(events).startswith(f"{PREFIX} I heard")
    assert any(m.get("realtimeInput", {}).get("audioStreamEnd") for m in sim.sessions[0].received)


async def test_events_sent_while_gemini_sets_up_are_answered_before_it_does(sim: Any, stack: Any) -> None:
    sim.setup_delay = 1.0
    async with livegate(stack) as lg:
        await lg.conn.recv()  # session.created
        await lg.conn.conversation.item.create(item={"type": "message", "role": "user",
                                                     "content": [{"type": "input_text", "text": "hello"}]})
        await lg.conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        seen = []
        while not seen or seen[-1].type != "session.updated":
            seen.append(await lg.conn.recv())
        set_up = [f for s in sim.sessions for f in s.sent if "setupComplete" in f]
        await lg.conn.response.create()
        events = await collect(lg.conn)
    assert set_up == [], "answered while Gemini was still setting up"
    assert answer(events) == f"{PREFIX} You said: hello"


async def test_a_setup_that_never_completes_is_an_error_after_the_events_were_answered(sim: Any, stack: Any) -> None:
    gateway = stack[1].state.gateway
    shared = gateway.config
    gateway.config = dataclasses.replace(shared, timeouts=dataclasses.replace(shared.timeouts, upstream_setup_s=0.5))
    sim.setup_delay = 1.5
    try:
        async with livegate(stack) as lg:
            await lg.conn.recv()
            await lg.conn.conversation.item.create(item={"type": "message", "role": "user",
                                                         "content": [{"type": "input_text", "text": "hello"}]})
            await lg.conn.session.update(session={"type": "realtime", "instructions": "Be brief."})
            events = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async for event in lg.conn:
                    events.append(event)
    finally:
        gateway.config = shared
    assert [e.type for e in events] == ["conversation.item.added", "conversation.item.done", "session.updated",
                                        "error"]
    assert events[-1].error.code == "upstream_timeout" and closed.value.rcvd.code == 1014


async def test_a_one_second_network_blip_costs_the_session_nothing(sim: Any, stack: Any) -> None:
    async with livegate(stack) as lg:
        await text_session(lg.conn)
        await ask(lg.conn, "My name is Ada")
        handle = [f for f in sim.sessions[0].sent if "sessionResumptionUpdate" in f][-1]
        port = sim.port
        await sim.stop()  # the connection ends and nothing answers for a second
        await asyncio.sleep(1.0)
        await sim.start(port=port)
        final = await ask(lg.conn, "What did I say before?")
        counted = await lg.recoveries()
    assert answer(final) == f"{PREFIX} Before this you said: My name is Ada"
    assert sim.sessions[-1].resumed_from == handle["sessionResumptionUpdate"]["newHandle"]
    assert counted["resumed"] == 1.0 and counted["retried"] >= 1.0
