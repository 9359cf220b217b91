"""The model capability table (mappings/models.yaml): matching, overrides, load errors, and a simulator
that behaves as the named model does (1007 on what it cannot take, ignored clientContent, voiceActivity)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import websockets

from livegate.config import ConfigError, parse_config
from livegate.mapping import MappingError
from livegate.simulator import GeminiLiveSimulator
from livegate.translation.capabilities import ModelTable, shipped_table
from tests.test_simulator import audio_msg, open_client, pcm16, silence, text_turn

TABLE = shipped_table()


@pytest.mark.parametrize(("model", "family"), [
    ("gemini-3.8-live", "gemini-3.8-live"),
    ("models/gemini-3.8-live", "gemini-3.8-live"),
    ("projects/p/locations/us-central1/publishers/google/models/gemini-3.8-live", "gemini-3.8-live"),
    ("gemini-3.8-live-extended-thinking", "gemini-3.8-live-extended-thinking"),
    ("gemini-3.1-flash-live-preview", "gemini-3.1-flash-live"),
    ("gemini-live-2.5-flash", "gemini-2.5-flash-native-audio"),
    ("gemini-2.5-flash-native-audio-preview-09-2025", "gemini-2.5-flash-native-audio"),
    ("gemini-2.0-flash-live-001", "gemini-2.0-flash-live"),
    ("gemini-3.5-transcribe-live", "gemini-3.5-transcribe-live"),
    ("gemini-3.5-live-translate-preview", "gemini-3.5-live-translate"),
    ("livegate-simulator", "gemini-3.8-live"),
    ("gemini-9-unknown", "default"),
])
def test_rows_match_by_pattern(model: str, family: str) -> None:
    assert TABLE.row(model)["family"] == family


def test_unknown_models_get_the_conservative_row() -> None:
    caps = TABLE.capabilities("gemini-9-unknown", "aistudio")
    assert caps["output_modalities"] == ["AUDIO"] and caps["context_update"] is False
    assert caps["model"] == "gemini-9-unknown"


def test_backend_columns_and_overrides() -> None:
    assert TABLE.capabilities("gemini-3.8-live", "vertex")["transparent_resumption"] is True
    assert TABLE.capabilities("gemini-3.8-live", "aistudio")["transparent_resumption"] is False
    assert TABLE.capabilities("gemini-3.8-live", "aistudio")["affective_dialog"] is False
    caps = TABLE.capabilities("gemini-9-unknown", "aistudio",
                              {"output_modalities": ["TEXT", "AUDIO"], "context_update": True, "mode": "chat"})
    assert caps["output_modalities"] == ["TEXT", "AUDIO"] and caps["context_update"] is True
    assert "mode" not in caps  # LiteLLM's own model_info keys are not capability columns


def test_model_info_is_checked_when_the_config_loads() -> None:
    entry = {"model_name": "new", "litellm_params": {"model": "gemini/gemini-4-live", "api_key": "k"},
             "model_info": {"output_modalities": ["VIDEO"]}}
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.model_info\.output_modalities"):
        parse_config({"model_list": [entry]})
    entry["model_info"] = {"output_modalities": ["TEXT"], "context_update": True, "mode": "chat"}
    route = parse_config({"model_list": [entry]}).routes[0]
    assert route.model_info == entry["model_info"]


def test_a_bad_table_names_file_and_line(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "mappings" / "models.yaml").read_text()
    bad = tmp_path / "models.yaml"
    bad.write_text(text.replace("thinking: level", "thinking: sometimes", 1))
    with pytest.raises(MappingError) as info:
        ModelTable.load(bad)
    assert "models.yaml:" in str(info.value) and "sometimes" in str(info.value)


# --- the simulator behaves as the model named in setup ---------------------------------------------------


@pytest.fixture
async def sim() -> Any:
    async with GeminiLiveSimulator() as simulator:
        yield simulator


async def _closed_1007(c: Any) -> str:
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            await c.recv()
    assert info.value.rcvd.code == 1007
    return info.value.rcvd.reason


@pytest.mark.parametrize("model", ["gemini-3.8-live", "gemini-live-2.5-flash", "gemini-3.1-flash-live-preview",
                                   "livegate-simulator", "some-unknown-model"])
async def test_audio_only_models_close_1007_on_text(sim: GeminiLiveSimulator, model: str) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": f"models/{model}", "generationConfig": {"responseModalities": ["TEXT"]}}})
    assert "response modalities (TEXT) is not supported" in await _closed_1007(c)


@pytest.mark.parametrize(("model", "setup", "reason"), [
    ("gemini-3.8-live", {"proactivity": {"proactiveAudio": False}}, "proactiveAudio cannot be disabled"),
    ("gemini-3.8-live", {"generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}}}, "thinkingLevel"),
    ("gemini-3.8-live", {"generationConfig": {"enableAffectiveDialog": True}}, "enableAffectiveDialog"),
    ("gemini-3.8-live", {"sessionResumption": {"transparent": True}}, "transparent"),
    ("gemini-3.8-live-extended-thinking", {"tools": [{"functionDeclarations": [{"name": "f", "behavior": "BLOCKING"}]}],
                                           "generationConfig": {"thinkingConfig": {"thinkingBudget": 100}}},
     "NON_BLOCKING"),
    ("gemini-3.8-live-extended-thinking", {"generationConfig": {}}, "exactly one of thinkingLevel"),
    ("gemini-3.5-transcribe-live", {"generationConfig": {"responseModalities": ["AUDIO"]}}, "(AUDIO) is not supported"),
    ("gemini-3.5-live-translate-preview", {"systemInstruction": {"parts": [{"text": "x"}]}}, "systemInstruction"),
])
async def test_what_a_model_cannot_take_closes_1007(sim: GeminiLiveSimulator, model: str, setup: dict[str, Any],
                                                    reason: str) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": f"models/{model}", **setup}})
    assert reason in await _closed_1007(c)


async def test_context_update_only_where_the_model_takes_it(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-3.8-live"}})
    await c.recv()
    await c.send({"contextUpdate": {"systemInstruction": {"parts": [{"text": "Be brief."}]}}})
    await c.send(text_turn("hi"))
    assert any("serverContent" in f for f in await c.turn())
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-live-2.5-flash"}})
    await c.recv()
    await c.send({"contextUpdate": {"systemInstruction": {"parts": [{"text": "Be brief."}]}}})
    assert "contextUpdate is not supported" in await _closed_1007(c)


async def test_31_ignores_client_content_after_the_first_turn(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-3.1-flash-live-preview", "outputAudioTranscription": {}}})
    await c.recv()
    await c.send(text_turn("first"))
    await c.turn()
    await c.send(text_turn("second"))
    with pytest.raises(TimeoutError):
        await c.recv(timeout=0.3)
    await c.send({"realtimeInput": {"text": "third"}})  # what works after the first turn
    frames = await c.turn()
    said = "".join(f["serverContent"]["outputTranscription"]["text"] for f in frames
                   if "outputTranscription" in f.get("serverContent", {}))
    assert said.endswith("You said: third")


async def test_38_sends_voice_activity_and_unasked_input_transcription(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-3.8-live"}})
    await c.recv()
    for chunk in (pcm16(600), silence(900)):
        await c.send(audio_msg(chunk))
    frames = await c.turn()
    kinds = [f["voiceActivity"]["type"] for f in frames if "voiceActivity" in f]
    assert kinds == ["ACTIVITY_START", "ACTIVITY_END"]
    assert any("inputTranscription" in f.get("serverContent", {}) for f in frames)
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-live-2.5-flash"}})
    await c.recv()
    for chunk in (pcm16(600), silence(900)):
        await c.send(audio_msg(chunk))
    frames = await c.turn()
    assert not any("voiceActivity" in f or "inputTranscription" in f.get("serverContent", {}) for f in frames)


def test_input_queue_drops_the_oldest_audio_only() -> None:
    from livegate.translation.resumption import InputQueue

    def audio(ms: int) -> dict[str, Any]:
        return {"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=24000", "data": "AAAA" * (ms * 16)}}}

    queue = InputQueue(max_audio_ms=2000)
    text = {"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}]}}
    tool = {"toolResponse": {"functionResponses": [{"id": "c1", "response": {}}]}}
    for message in (audio(1000), text, audio(1000), tool, audio(500)):
        queue.put(message)
    assert queue.take_dropped() == pytest.approx(1000)
    assert [next(iter(m)) for m in queue.drain()] == ["clientContent", "realtimeInput", "toolResponse", "realtimeInput"]


def test_a_bad_resumption_policy_fails_at_load(tmp_path: Path) -> None:
    import shutil

    from livegate.mapping import load_mappings

    root = tmp_path / "mappings"
    shutil.copytree(Path(__file__).parent.parent / "mappings", root)
    policy = root / "resumption.yaml"
    policy.write_text(policy.read_text().replace("&& session.resumption_handle", "&& session.resumption_handle &&"))
    with pytest.raises(MappingError, match=r"resumption\.yaml:.*expression syntax error"):
        load_mappings(root)


# --- the simulator's resumption ----------------------------------------------------------------------


async def test_simulator_handles_carry_the_conversation_and_expire() -> None:
    async with GeminiLiveSimulator(handle_ttl=0.3) as sim:
        c = await open_client(sim)
        await c.send({"setup": {"model": "models/gemini-2.0-flash-live-001",
                                "generationConfig": {"responseModalities": ["TEXT"]}, "sessionResumption": {}}})
        await c.recv()
        await c.send(text_turn("My name is Ada"))
        handle = (await c.turn())[-1]["sessionResumptionUpdate"]["newHandle"]
        resumed = await open_client(sim)
        await resumed.send({"setup": {"model": "models/gemini-2.0-flash-live-001",
                                      "generationConfig": {"responseModalities": ["TEXT"]},
                                      "sessionResumption": {"handle": handle}}})
        await resumed.recv()
        await resumed.send(text_turn("What did I say before?"))
        said = "".join(p.get("text", "") for f in await resumed.turn()
                       for p in f.get("serverContent", {}).get("modelTurn", {}).get("parts", []))
        assert said.endswith("Before this you said: My name is Ada")
        for bad in ("no-such-handle", handle):
            if bad == handle:
                await asyncio.sleep(0.35)  # expired
            late = await open_client(sim)
            await late.send({"setup": {"model": "models/gemini-3.8-live", "sessionResumption": {"handle": bad}}})
            assert "Invalid or expired session resumption handle" in await _closed_1007(late)


async def test_simulator_go_away_and_seeded_history() -> None:
    async with GeminiLiveSimulator(connection_lifetime=0.4, go_away_lead=0.2) as sim:
        c = await open_client(sim)
        await c.send({"setup": {"model": "models/gemini-2.0-flash-live-001", "generationConfig": {
            "responseModalities": ["TEXT"]}, "historyConfig": {"initialHistoryInClientContent": True}}})
        await c.recv()
        await c.send({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "I am Ada"}]},
                                                  {"role": "model", "parts": [{"text": "Hello Ada"}]}],
                                        "turnComplete": True}})
        assert (await c.recv(timeout=1.0)) == {"goAway": {"timeLeft": "0.2s"}}, "history is not answered"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await c.recv(timeout=1.0)
        assert closed.value.rcvd.code == 1000
        assert sim.sessions[0].connection is None


async def test_transcription_model_only_transcribes(sim: GeminiLiveSimulator) -> None:
    """gemini-3.5-transcribe-live: an utterance comes back as its input transcription (speaker labels and
    offsets with diarization, the last chunk `finished`), then turnComplete: no model turn, no usage.
    Text input closes the session with 1007."""
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-3.5-transcribe-live",
                            "generationConfig": {"responseModalities": ["TEXT"]},
                            "inputAudioTranscription": {"languageCodes": ["en-US"], "diarization": True}}})
    await c.recv()
    await c.send(audio_msg(pcm16(1000) + silence(700)))
    frames = await c.turn()
    pieces = [f["serverContent"]["inputTranscription"] for f in frames
              if "inputTranscription" in f.get("serverContent", {})]
    assert "".join(p["text"] for p in pieces).endswith("heard 1.5 s of audio")
    assert all(p["speakerLabel"] == "A" and p["endOffset"].endswith("s") for p in pieces)
    assert [p.get("finished") for p in pieces] == [None] * (len(pieces) - 1) + [True]
    assert not any("modelTurn" in f.get("serverContent", {}) or "usageMetadata" in f for f in frames)
    assert {"serverContent": {"turnComplete": True}} in frames
    await c.send(text_turn("hello"))
    assert "only transcribes audio" in await _closed_1007(c)
