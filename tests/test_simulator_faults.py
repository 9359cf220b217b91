"""The simulator's Gemini faults (issue 17 §3): each silent failure PROTOCOLS §12 lists is a mode a test
switches on (GeminiLiveSimulator.inject), the 3.8 quirk follows the capability table, and a goAway with a
short timeLeft, a 1011 mid-answer and a backend that sends no handle are at hand."""

from __future__ import annotations

import base64
from array import array
from typing import Any

import pytest

from livegate.simulator import GeminiLiveSimulator
from tests.test_simulator import PREFIX, audio_msg, content, open_client, pcm16, sim, text_turn

__all__ = ["sim"]  # the fixture, imported for these tests


async def setup(sim: GeminiLiveSimulator, model: str = "gemini-2.0-flash-live-001", modality: str = "TEXT",
                **fields: Any) -> Any:
    c = await open_client(sim)
    await c.send({"setup": {"model": f"models/{model}", "generationConfig": {"responseModalities": [modality]},
                            "sessionResumption": {}, **fields}})
    assert "setupComplete" in await c.recv()
    return c


def mean_level(frames: list[dict[str, Any]]) -> float:
    samples = array("h")
    for f in frames:
        for part in f.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
            if "inlineData" in part:
                samples.frombytes(base64.b64decode(part["inlineData"]["data"]))
    return sum(map(abs, samples)) / len(samples)


async def test_a_stalled_turn_sends_nothing_and_the_next_is_answered(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim)
    sim.inject("stall")
    await c.send(text_turn("hello"))
    with pytest.raises(TimeoutError):
        await c.recv(timeout=0.3)
    await c.send({"clientContent": {"turnComplete": True}})  # asked again
    assert content(await c.turn()) == f"{PREFIX} You said: hello"
    await c.ws.close()


@pytest.mark.parametrize(("fault", "reason"), [("empty_turn", None), ("rejected", "RESPONSE_REJECTED")])
async def test_empty_and_rejected_turns_end_with_nothing_in_them(sim: GeminiLiveSimulator, fault: str,
                                                                 reason: str | None) -> None:
    c = await setup(sim)
    sim.inject(fault, times=2)
    await c.send(text_turn("hello"))
    for _ in range(2):
        end = (await c.recv())["serverContent"]
        assert end.get("turnComplete") is True and end.get("turnCompleteReason") == reason
        assert "modelTurn" not in end
        await c.send({"clientContent": {"turnComplete": True}})
    assert content(await c.turn()) == f"{PREFIX} You said: hello", "the faults were used up"
    await c.ws.close()


async def test_a_silent_answer_is_near_zero_audio_with_its_transcript(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim, "gemini-3.8-live", "AUDIO", outputAudioTranscription={})
    sim.inject("silent_audio")
    await c.send(text_turn("hello"))
    silent = await c.turn()
    await c.send(text_turn("hello"))
    healthy = await c.turn()
    assert 10 < mean_level(silent) < 30, "the failure seen in production: a mean absolute sample about 18"
    assert mean_level(healthy) > 2000
    said = "".join(f["serverContent"]["outputTranscription"]["text"] for f in silent
                   if "outputTranscription" in f.get("serverContent", {}))
    assert said == f"{PREFIX} You said: hello", "the transcript says it spoke"
    await c.ws.close()


async def test_a_close_mid_answer_is_a_1011_whose_handles_are_dead(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim)
    await c.send(text_turn("My name is Ada"))
    handle = (await c.turn())[-1]["sessionResumptionUpdate"]["newHandle"]
    sim.inject("close_mid_answer")
    await c.send(text_turn("And tomorrow?"))
    first = await c.recv()
    assert content([first]), "the answer began"
    closed = await c.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1011
    again = await open_client(sim)
    await again.send({"setup": {"model": "models/gemini-2.0-flash-live-001", "sessionResumption": {"handle": handle},
                                "generationConfig": {"responseModalities": ["TEXT"]}}})
    refused = await again.closed()
    assert refused.rcvd is not None and refused.rcvd.code == 1011, "a 1011 is not fixed by resuming"


async def test_a_go_away_with_a_short_time_left_then_the_close(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim)
    await sim.sessions[0].go_away(0.3)
    assert await c.recv() == {"goAway": {"timeLeft": "0.3s"}}
    closed = await c.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1000


async def test_a_backend_that_sends_no_handle(sim: GeminiLiveSimulator) -> None:
    sim.issue_handles = False
    c = await setup(sim)
    await c.send(text_turn("hello"))
    frames = await c.recv_until(lambda f: f.get("serverContent", {}).get("turnComplete"))
    with pytest.raises(TimeoutError):
        await c.recv(timeout=0.2)
    assert not any("sessionResumptionUpdate" in f for f in frames)
    await c.ws.close()


async def test_a_function_result_in_client_content_is_answered_like_a_tool_response(
        sim: GeminiLiveSimulator) -> None:
    c = await setup(sim)
    await c.send({"clientContent": {"turns": [{"role": "user", "parts": [{"functionResponse": {
        "id": "call-1", "name": "get_weather", "response": {"output": {"temperature_c": 21}}}}]}],
        "turnComplete": True}})
    assert content(await c.turn()) == \
        f'{PREFIX} The tool get_weather returned: {{"output": {{"temperature_c": 21}}}}'
    await c.ws.close()


@pytest.mark.parametrize(("model", "ends_turn"), [("gemini-3.8-live", False), ("gemini-2.0-flash-live-001", True)])
async def test_audio_stream_end_ends_the_turn_only_where_the_table_says(sim: GeminiLiveSimulator, model: str,
                                                                        ends_turn: bool) -> None:
    c = await setup(sim, model, "AUDIO" if model.startswith("gemini-3") else "TEXT", outputAudioTranscription={})
    await c.send(audio_msg(pcm16(600)))
    await c.send({"realtimeInput": {"audioStreamEnd": True}})
    if not ends_turn:
        assert await c.recv() == {"voiceActivity": {"type": "ACTIVITY_START"}}
        with pytest.raises(TimeoutError):
            await c.recv(timeout=0.3)  # the user waits: audioStreamEnd did not end the turn on 3.8
        low_level = array("h", [(-1) ** i * 20 for i in range(16000 * 600 // 1000)]).tobytes()
        await c.send(audio_msg(low_level))  # what its VAD needs: the speaker heard to stop
    frames = await c.turn()
    said = content(frames) + "".join(f["serverContent"]["outputTranscription"]["text"] for f in frames
                                     if "outputTranscription" in f.get("serverContent", {}))
    assert f"{PREFIX} I heard {0.6 if ends_turn else 1.1} s of audio." in said
    await c.ws.close()

