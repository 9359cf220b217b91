"""The simulator imitates what Gemini does with images, video frames, its own tools and features, and the
turns it stops (turnCompleteReason), by the capability table (mappings/models.yaml)."""

from __future__ import annotations

from typing import Any

import pytest

from livegate.simulator import GeminiLiveSimulator
from tests.test_simulator import PREFIX, b64, content, open_client, sim, text_turn

__all__ = ["sim"]  # the fixture, imported for these tests

JPEG = b"\xff\xd8\xff\xe0fake-jpeg"


def image_turn(text: str, *mimes: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": text}]
    parts += [{"inlineData": {"mimeType": mime, "data": b64(JPEG)}} for mime in mimes]
    return {"clientContent": {"turns": [{"role": "user", "parts": parts}], "turnComplete": True}}


def usage_of(frames: list[dict[str, Any]]) -> dict[str, int]:
    usage = next(f["usageMetadata"] for f in frames if "usageMetadata" in f)
    return {d["modality"]: d["tokenCount"] for d in usage["promptTokensDetails"]}


async def setup(sim: GeminiLiveSimulator, model: str, **fields: Any) -> Any:
    c = await open_client(sim)
    config = {"generationConfig": {"responseModalities": ["TEXT"]}}
    await c.send({"setup": {"model": f"models/{model}", **config, **fields}})
    assert "setupComplete" in await c.recv()
    return c


async def test_an_image_in_client_content_is_seen_and_counted(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim, "gemini-2.0-flash-live-001")
    await c.send(image_turn("What is this?", "image/jpeg", "image/png"))
    frames = await c.turn()
    assert content(frames) == f"{PREFIX} I see 2 images. You said: What is this?"
    assert usage_of(frames)["IMAGE"] == 2 * 258
    await c.ws.close()


async def test_video_frames_count_as_video_with_the_media_resolution(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim, "gemini-2.0-flash-live-001",
                    generationConfig={"responseModalities": ["TEXT"], "mediaResolution": "MEDIA_RESOLUTION_LOW"})
    for _ in range(3):
        await c.send({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": b64(JPEG)}}})
    await c.send(text_turn("And now?"))
    frames = await c.turn()
    assert content(frames) == f"{PREFIX} I see 3 images. You said: And now?"
    assert usage_of(frames) == {"TEXT": usage_of(frames)["TEXT"], "VIDEO": 3 * 66}
    await c.ws.close()


@pytest.mark.parametrize(("model", "message", "reason"), [
    ("gemini-3.5-live-translate-preview", image_turn("hi", "image/png"), "image input is not supported"),
    ("gemini-3.5-live-translate-preview", {"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": "AAAAAA=="}}},
     "video input is not supported"),
    ("gemini-2.0-flash-live-001", image_turn("hi", "image/gif"), "Unsupported MIME type: image/gif"),
])
async def test_images_the_model_cannot_take_close_1007(sim: GeminiLiveSimulator, model: str, message: dict[str, Any],
                                                      reason: str) -> None:
    modality = "TEXT" if "TEXT" in sim.models.row(model)["output_modalities"] else "AUDIO"
    c = await setup(sim, model, generationConfig={"responseModalities": [modality]})
    await c.send(message)
    closed = await c.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1007 and reason in closed.rcvd.reason


@pytest.mark.parametrize(("model", "setup_fields", "reason"), [
    ("gemini-3.8-live", {"tools": [{"codeExecution": {}}]}, "codeExecution is not supported"),
    ("gemini-9-unknown-live", {"tools": [{"googleSearch": {}}]}, "googleSearch is not supported"),
    ("gemini-3.8-live", {"generationConfig": {"thinkingConfig": {"thinkingBudget": 100}}},
     "thinkingBudget is not supported"),
    ("gemini-3.8-live", {"generationConfig": {"mediaResolution": "MEDIA_RESOLUTION_HUGE"}}, "invalid mediaResolution"),
])
async def test_features_the_model_lacks_close_1007(sim: GeminiLiveSimulator, model: str, setup_fields: dict[str, Any],
                                                   reason: str) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": f"models/{model}", **setup_fields}})
    closed = await c.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1007 and reason in closed.rcvd.reason


async def test_google_search_and_features_accepted_where_the_model_has_them(sim: GeminiLiveSimulator) -> None:
    c = await setup(sim, "gemini-2.5-flash-native-audio-preview-09-2025",
                    tools=[{"googleSearch": {}}, {"codeExecution": {}}], proactivity={"proactiveAudio": True},
                    generationConfig={"responseModalities": ["AUDIO"], "enableAffectiveDialog": True,
                                      "thinkingConfig": {"thinkingBudget": 512}})
    await c.ws.close()


@pytest.mark.parametrize(("phrase", "reason"), [("[sim:safety]", "PROHIBITED_INPUT_CONTENT"),
                                                ("[sim:malformed-call]", "MALFORMED_FUNCTION_CALL")])
async def test_trigger_phrases_stop_the_turn_with_a_reason(sim: GeminiLiveSimulator, phrase: str, reason: str) -> None:
    c = await setup(sim, "gemini-2.0-flash-live-001")
    await c.send(text_turn(f"please {phrase}"))
    frame = await c.recv()
    assert frame["serverContent"] == {"turnComplete": True, "turnCompleteReason": reason}
    assert "usageMetadata" in frame
    await c.send(text_turn("hello"))
    assert content(await c.turn()) == f"{PREFIX} You said: hello"
    await c.ws.close()


async def test_extended_thinking_ends_turns_waiting_for_input(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.send({"setup": {"model": "models/gemini-3.8-live-extended-thinking",
                            "generationConfig": {"responseModalities": ["AUDIO"],
                                                 "thinkingConfig": {"thinkingLevel": "LOW"}},
                            "outputAudioTranscription": {}}})
    assert "setupComplete" in await c.recv()
    await c.send(text_turn("hi"))
    frames = await c.turn()
    end = next(f["serverContent"] for f in frames if f.get("serverContent", {}).get("turnComplete"))
    assert end["waitingForInput"] is True
    await c.ws.close()
