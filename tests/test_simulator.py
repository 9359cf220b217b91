"""Tests of the local Gemini Live simulator (livegate.simulator), over loopback only.

Most tests drive it with a raw `websockets` client; a few with the real google-genai SDK over TLS.
Every frame the simulator sends is validated against google-genai's own LiveServerMessage model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from google import genai
from google.genai import _live_converters, types
from websockets.asyncio.client import ClientConnection, connect

from livegate.simulator import GeminiLiveSimulator
from livegate.simulator import script as simulator_script
from tests.fakes.google import tls_files

AI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
VERTEX_PATH = "/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent"
PREFIX = "[livegate simulator]"
HOST = "127.0.0.1"
MODEL = "gemini-2.0-flash-live-001"  # a legacy model that answers in TEXT (mappings/models.yaml)


# --- helpers -------------------------------------------------------------------------------------------


def validate(frame: dict[str, Any], backend: str = "aistudio") -> None:
    """The frame must parse as the SDK would parse it (Vertex frames go through the SDK's converter)."""
    if backend == "vertex":
        frame = _live_converters._LiveServerMessage_from_vertex(frame)
    elif "voiceActivity" in frame:  # its wire `type` is renamed by the SDK's converter
        frame = _live_converters._LiveServerMessage_from_mldev(frame)
    types.LiveServerMessage.model_validate(frame)


def pcm16(ms: int, rate: int = 16000, amplitude: float = 0.3, hz: float = 300.0) -> bytes:
    n, step = rate * ms // 1000, 2 * math.pi * hz / rate
    return struct.pack(f"<{n}h", *(round(amplitude * 32767 * math.sin(step * i)) for i in range(n)))


def silence(ms: int, rate: int = 16000) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def b64(data: bytes, urlsafe: bool = False) -> str:
    if urlsafe:  # what the genai SDK sends: URL-safe alphabet (here also unpadded)
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    return base64.b64encode(data).decode()


class Client:
    """A raw websockets client that checks and decodes every server frame."""

    def __init__(self, ws: ClientConnection, backend: str) -> None:
        self.ws, self.backend = ws, backend

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, timeout: float = 2.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(raw, bytes), "the real service sends JSON in binary frames"
        frame = json.loads(raw)
        validate(frame, self.backend)
        return frame

    async def recv_until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        frames = [await self.recv()]
        while not done(frames[-1]):
            frames.append(await self.recv())
        return frames

    async def turn(self) -> list[dict[str, Any]]:
        """Frames up to and including the sessionResumptionUpdate that follows every completed turn."""
        return await self.recv_until(lambda f: "sessionResumptionUpdate" in f)

    async def setup(self, **fields: Any) -> dict[str, Any]:
        await self.send({"setup": {"model": f"models/{MODEL}", **fields}})
        return await self.recv()

    async def closed(self) -> websockets.ConnectionClosed:
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await self.recv()
        return info.value


async def open_client(sim: GeminiLiveSimulator, path: str = AI_PATH, **kwargs: Any) -> Client:
    ws = await connect(sim.url + path, proxy=None, **kwargs)
    return Client(ws, "vertex" if "aiplatform" in path else "aistudio")


def content(frames: list[dict[str, Any]], kind: str = "text") -> str:
    return "".join(
        part.get(kind, "")
        for f in frames
        for part in f.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )


def transcript(frames: list[dict[str, Any]], kind: str) -> str:
    return "".join(f["serverContent"][kind]["text"] for f in frames if kind in f.get("serverContent", {}))


def text_turn(text: str) -> dict[str, Any]:
    return {"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}}


def audio_msg(pcm: bytes, rate: int = 16000, urlsafe: bool = False) -> dict[str, Any]:
    return {"realtimeInput": {"audio": {"mimeType": f"audio/pcm;rate={rate}", "data": b64(pcm, urlsafe)}}}


@pytest.fixture
async def sim() -> AsyncIterator[GeminiLiveSimulator]:
    async with GeminiLiveSimulator() as simulator:
        yield simulator


# --- raw-client tests ----------------------------------------------------------------------------------


async def test_setup_and_streamed_text_turn(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim, additional_headers={"x-goog-api-key": "anything"})
    assert await c.setup(generationConfig={"responseModalities": ["TEXT"]}) == {
        "setupComplete": {"sessionId": "sim-session-1"}
    }
    await c.send(text_turn("hello there, simulator"))
    frames = await c.turn()

    chunks = [f for f in frames if "modelTurn" in f.get("serverContent", {})]
    assert 3 <= len(chunks) <= 6
    assert content(frames) == f"{PREFIX} You said: hello there, simulator"
    assert frames[-3] == {"serverContent": {"generationComplete": True}}
    usage = frames[-2]["usageMetadata"]
    assert frames[-2]["serverContent"] == {"turnComplete": True}
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"] > 0
    assert usage["promptTokensDetails"][0]["modality"] == "TEXT"
    assert usage["responseTokensDetails"] == [{"modality": "TEXT", "tokenCount": usage["responseTokenCount"]}]
    assert frames[-1] == {"sessionResumptionUpdate": {"newHandle": "sim-handle-1", "resumable": True}}

    session = sim.sessions[0]
    assert (session.path, session.backend) == (AI_PATH, "aistudio")
    assert session.headers["x-goog-api-key"] == "anything"
    assert session.received[1] == text_turn("hello there, simulator")
    assert session.sent[0]["setupComplete"] and session.sent[1:] == frames
    await c.ws.close()


async def test_history_then_turn_complete_and_realtime_text(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.setup(generationConfig={"responseModalities": ["TEXT"]})
    await c.send({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "remember me"}]}]}})
    await c.send({"clientContent": {"turns": [{"role": "model", "parts": [{"text": "ok"}]}]}})
    with pytest.raises(TimeoutError):  # no turnComplete yet: nothing is answered
        await c.recv(timeout=0.1)
    await c.send({"clientContent": {"turnComplete": True}})
    assert content(await c.turn()) == f"{PREFIX} You said: remember me"
    await c.send(json.dumps({"realtimeInput": {"text": "typed live"}}).encode())  # binary frame
    frames = await c.turn()
    assert content(frames) == f"{PREFIX} You said: typed live"
    assert frames[-1]["sessionResumptionUpdate"]["newHandle"] == "sim-handle-2"
    await c.ws.close()


async def test_audio_modality_with_output_transcription(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.setup(outputAudioTranscription={})  # no responseModalities: AUDIO, like the real service
    await c.send(text_turn("say something"))
    frames = await c.turn()

    answer = f"{PREFIX} You said: say something"
    blobs = [
        part["inlineData"]
        for f in frames
        for part in f.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    ]
    assert len(blobs) > 1 and {b["mimeType"] for b in blobs} == {"audio/pcm;rate=24000"}
    pcm = b"".join(base64.b64decode(b["data"], validate=True) for b in blobs)  # standard base64
    assert len(pcm) == len(answer.split()) * 60 * 48  # 60 ms per word, 24 kHz 16-bit mono
    assert transcript(frames, "outputTranscription") == answer
    kinds = ["audio" if "modelTurn" in f.get("serverContent", {}) else "tx" for f in frames[:-3]]
    last_audio = max(i for i, kind in enumerate(kinds) if kind == "audio")
    assert kinds[0] == "audio" and kinds.index("tx") < last_audio  # transcripts interleaved with the audio
    usage = frames[-2]["usageMetadata"]
    assert usage["responseTokensDetails"] == [
        {"modality": "AUDIO", "tokenCount": usage["responseTokenCount"]}
    ]
    await c.ws.close()


async def test_energy_vad_ends_audio_turn(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.setup(generationConfig={"responseModalities": ["TEXT"]}, inputAudioTranscription={})
    # Leading silence is ignored; 1.0 s of speech + 0.5 s of silence make the turn (1.5 s).
    audio = silence(300) + pcm16(1000) + silence(700)
    for i, start in enumerate(range(0, len(audio), 3200)):  # 100 ms chunks, alternating base64 alphabets
        await c.send(audio_msg(audio[start : start + 3200], urlsafe=bool(i % 2)))
    frames = await c.turn()
    assert transcript(frames, "inputTranscription") == f"{PREFIX} heard 1.5 s of audio"
    assert content(frames) == f"{PREFIX} I heard 1.5 s of audio."
    assert {"modality": "AUDIO", "tokenCount": 48} in frames[-2]["usageMetadata"]["promptTokensDetails"]
    # A short click followed by silence is not speech.
    await c.send(audio_msg(pcm16(30) + silence(800)))
    with pytest.raises(TimeoutError):
        await c.recv(timeout=0.1)
    await c.ws.close()


async def test_audio_stream_end_and_media_chunks(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    await c.setup(generationConfig={"responseModalities": ["TEXT"]})
    blob = {"mimeType": "audio/pcm;rate=24000", "data": b64(pcm16(300, rate=24000), urlsafe=True)}
    await c.send({"realtimeInput": {"mediaChunks": [blob]}})  # deprecated form
    await c.send({"realtimeInput": {"audioStreamEnd": True}})
    assert content(await c.turn()) == f"{PREFIX} I heard 0.3 s of audio."
    await c.ws.close()


async def test_manual_activity_start_end(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    # snake_case inside the config, as the SDK sends it
    await c.setup(
        generationConfig={"responseModalities": ["TEXT"]},
        realtimeInputConfig={"automatic_activity_detection": {"disabled": True}},
    )
    await c.send(audio_msg(pcm16(200)))  # outside an activity: not part of any turn
    await c.send({"realtimeInput": {"activityStart": {}}})
    await c.send(audio_msg(silence(400, 24000) + pcm16(400, 24000), rate=24000))  # silence counts too
    await c.send({"realtimeInput": {"activityEnd": {}}})
    assert content(await c.turn()) == f"{PREFIX} I heard 0.8 s of audio."
    await c.ws.close()


async def test_tool_call_round_trip_snake_case(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    schema = {
        "type": "object",
        "properties": {
            "city_name": {"type": "string"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "tags": {"type": "array"},
            "note": {"type": "string"},
        },
        "required": ["city_name", "days", "metric", "tags"],
    }
    declaration = {"name": "get_weather", "parameters_json_schema": schema}
    setup = {
        "model": f"models/{MODEL}",
        "generation_config": {"response_modalities": ["TEXT"]},
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "tools": [{"function_declarations": [declaration]}],
    }
    await c.send({"setup": setup})
    assert "setupComplete" in await c.recv()
    user = {"role": "user", "parts": [{"text": "please call GET_WEATHER now"}]}
    await c.send({"client_content": {"turns": [user], "turn_complete": True}})
    call = await c.recv()
    assert call == {
        "toolCall": {
            "functionCalls": [
                {
                    "id": "call-1",
                    "name": "get_weather",
                    "args": {"city_name": "sample", "days": 1, "metric": True, "tags": None},
                }
            ]
        }
    }
    response = {"output": {"temp_c": 21}}  # user data: keys must not be re-spelled
    reply = {"id": "call-1", "name": "get_weather", "response": response}
    await c.send({"tool_response": {"function_responses": [reply]}})
    frames = await c.turn()
    assert content(frames) == f'{PREFIX} The tool get_weather returned: {{"output": {{"temp_c": 21}}}}'
    await c.ws.close()


async def test_tool_response_without_id_and_oas_schema(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim)
    decl = {
        "name": "lookup",
        "parameters": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}, "required": ["n"]},
    }
    await c.setup(generationConfig={"responseModalities": ["TEXT"]}, tools=[{"functionDeclarations": [decl]}])
    await c.send({"realtimeInput": {"text": "Lookup something"}})
    assert (await c.recv())["toolCall"]["functionCalls"][0]["args"] == {"n": 1}
    await c.send({"toolResponse": {"functionResponses": [{"name": "lookup", "response": {"output": 7}}]}})
    assert content(await c.turn()) == f'{PREFIX} The tool lookup returned: {{"output": 7}}'
    await c.ws.close()


async def test_vertex_path_usage_spelling(sim: GeminiLiveSimulator) -> None:
    c = await open_client(sim, VERTEX_PATH)
    await c.setup(generationConfig={"responseModalities": ["TEXT"]})
    await c.send(text_turn("hi"))
    frames = await c.turn()
    usage = frames[-2]["usageMetadata"]
    assert "candidatesTokenCount" in usage and "candidatesTokensDetails" in usage
    assert "responseTokenCount" not in usage and "responseTokensDetails" not in usage
    assert sim.sessions[0].backend == "vertex"
    await c.ws.close()


async def test_usage_after_turn_complete() -> None:
    async with GeminiLiveSimulator(usage_placement="after_turn_complete") as sim:
        c = await open_client(sim)
        await c.setup(generationConfig={"responseModalities": ["TEXT"]})
        await c.send(text_turn("hi"))
        frames = await c.turn()
        assert frames[-3] == {"serverContent": {"turnComplete": True}}
        assert list(frames[-2]) == ["usageMetadata"]
        assert "sessionResumptionUpdate" in frames[-1]
        await c.ws.close()


async def test_barge_in_interrupts_streaming() -> None:
    async with GeminiLiveSimulator(chunk_delay=0.05) as sim:
        c = await open_client(sim)
        await c.setup(generationConfig={"responseModalities": ["TEXT"]})
        await c.send(text_turn("one two three four five six seven eight nine ten eleven twelve"))
        assert "modelTurn" in (await c.recv())["serverContent"]
        await c.send(text_turn("stop"))
        frames = await c.recv_until(lambda f: f.get("serverContent", {}).get("interrupted", False))
        assert await c.recv() == {"serverContent": {"turnComplete": True}}
        assert not any("generationComplete" in f.get("serverContent", {}) for f in frames)
        assert content(await c.turn()) == f"{PREFIX} You said: stop"
        await c.ws.close()


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([text_turn("hi")], "first message must be setup"),
        (["{not json"], "Invalid JSON"),
        ([{"setup": {"model": "m"}}, {"setup": {"model": "m"}}], "only once"),
        ([{"setup": {"model": "m"}}, {"bogusField": {}}], "bogusField"),
        ([{"setup": {"model": "m"}}, {"clientContent": {}, "toolResponse": {}}], "Exactly one"),
        ([{"setup": {}}], "model"),
        ([{"setup": {"model": "m"}}, {"realtimeInput": {"activityStart": {}}}], "automaticActivityDetection"),
    ],
)
async def test_bad_input_closes_1007(sim: GeminiLiveSimulator, messages: list[Any], reason: str) -> None:
    c = await open_client(sim)
    for message in messages:
        await c.send(message)
    closed = await c.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1007 and reason in closed.rcvd.reason


async def test_internal_error_closes_1011_and_server_survives(
    sim: GeminiLiveSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str) -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(simulator_script, "split_text", broken)
    c = await open_client(sim)
    await c.setup()
    await c.send(text_turn("hi"))
    closed = await c.closed()
    assert closed.rcvd is not None and closed.rcvd.code == 1011 and "boom" in closed.rcvd.reason
    monkeypatch.undo()
    c = await open_client(sim)
    assert "setupComplete" in await c.setup()
    await c.ws.close()


async def test_handshake_rejections() -> None:
    async with GeminiLiveSimulator(api_key="secret") as sim:
        with pytest.raises(websockets.InvalidStatus) as info:
            await open_client(sim, additional_headers={"x-goog-api-key": "wrong"})
        assert info.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus) as info:
            await open_client(sim, "/ws/nope", additional_headers={"x-goog-api-key": "secret"})
        assert info.value.response.status_code == 404
        for headers in ({"x-goog-api-key": "secret"}, {"Authorization": "Bearer secret"}):
            c = await open_client(sim, VERTEX_PATH, additional_headers=headers)
            assert "setupComplete" in await c.setup()
            await c.ws.close()
        assert [s.session_id for s in sim.sessions] == ["sim-session-1", "sim-session-2"]


# --- the real google-genai SDK (TLS loopback, docs/protocol-notes.md §2) -----------------------------------------


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    files = tls_files(tmp_path_factory.mktemp("tls"), HOST)
    return files.cert, files.key


@pytest.fixture
async def sdk_client(
    cert_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[genai.Client, GeminiLiveSimulator]]:
    cert_path, key_path = cert_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    for var in ("GOOGLE_API_KEY", "GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    async with GeminiLiveSimulator(api_key="test", ssl=context) as sim:
        assert sim.url.startswith("wss://")
        client = genai.Client(api_key="test", http_options={"base_url": f"https://{HOST}:{sim.port}"})
        yield client, sim
    for session in sim.sessions:  # everything the SDK sent is a valid LiveClientMessage
        for message in session.received:
            types.LiveClientMessage.model_validate(message)


async def receive_turn(session: Any) -> list[types.LiveServerMessage]:
    return [message async for message in session.receive()]


async def test_sdk_text_turn(sdk_client: tuple[genai.Client, GeminiLiveSimulator]) -> None:
    client, sim = sdk_client
    async with client.aio.live.connect(model=MODEL, config={"response_modalities": ["TEXT"]}) as s:
        assert s.session_id == "sim-session-1"
        await s.send_client_content(turns={"role": "user", "parts": [{"text": "Hello SDK"}]})
        messages = await receive_turn(s)
        assert "".join(m.text or "" for m in messages) == f"{PREFIX} You said: Hello SDK"
        assert messages[-1].usage_metadata is not None and messages[-1].usage_metadata.response_token_count

        # audio from the SDK (URL-safe base64 on the wire) ending with audioStreamEnd
        await s.send_realtime_input(audio=types.Blob(data=pcm16(500), mime_type="audio/pcm;rate=16000"))
        await s.send_realtime_input(audio_stream_end=True)
        messages = await receive_turn(s)
        assert "".join(m.text or "" for m in messages) == f"{PREFIX} I heard 0.5 s of audio."
    assert sim.sessions[0].headers["x-goog-api-key"] == "test"
    assert sim.sessions[0].received[0]["setup"]["model"] == f"models/{MODEL}"


async def test_sdk_tool_round_trip(sdk_client: tuple[genai.Client, GeminiLiveSimulator]) -> None:
    client, _ = sdk_client
    declaration = types.FunctionDeclaration(
        name="lookup_order",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"order_id": types.Schema(type=types.Type.STRING)},
            required=["order_id"],
        ),
    )
    config = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT], tools=[types.Tool(function_declarations=[declaration])]
    )
    async with client.aio.live.connect(model=MODEL, config=config) as s:
        await s.send_client_content(turns={"role": "user", "parts": [{"text": "lookup_order please"}]})
        call = None
        async for message in s.receive():
            if message.tool_call:
                call = message.tool_call.function_calls[0]
                break
        assert call is not None and call.name == "lookup_order" and call.args == {"order_id": "sample"}
        reply = types.FunctionResponse(id=call.id, name=call.name, response={"output": "shipped"})
        await s.send_tool_response(function_responses=[reply])
        messages = await receive_turn(s)
        text = "".join(m.text or "" for m in messages)
        assert text == f'{PREFIX} The tool lookup_order returned: {{"output": "shipped"}}'
