"""Pipecat's `OpenAIRealtimeLLMService` in a pipeline, pointed at livegate on the simulator with only its URL and
key changed (issue 10 §3). Pipecat treats any `error` event as fatal: an error here ends the conversation.
Installed by the `frameworks` extra."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.frameworks_support import KEY, LONG_PROMPT, TOOL_PROMPT, Gateway, gateway, no_errors
from tests.test_e2e_live import pcm16

pytest.importorskip("pipecat.services.openai.realtime", reason="pipecat-ai is in the `frameworks` extra")

with warnings.catch_warnings():  # pipecat 1.x renames modules with DeprecationWarnings on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import (
        EndFrame,
        ErrorFrame,
        Frame,
        InputAudioRawFrame,
        InterruptionFrame,
        LLMFullResponseEndFrame,
        LLMRunFrame,
        LLMTextFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.services.openai.realtime import events
    from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
    from pipecat.workers.runner import WorkerRunner

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WEATHER = FunctionSchema(name="get_weather", description="Weather for a city",
                         properties={"city": {"type": "string"}}, required=["city"])


class Sink(FrameProcessor):
    """Collects what the LLM service pushes downstream."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self.answers: asyncio.Queue[None] = asyncio.Queue()
        self.text: asyncio.Queue[None] = asyncio.Queue()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        if isinstance(frame, LLMFullResponseEndFrame):
            self.answers.put_nowait(None)
        if isinstance(frame, LLMTextFrame):
            self.text.put_nowait(None)
        await self.push_frame(frame, direction)

    def said(self) -> str:
        return "".join(f.text for f in self.frames if isinstance(f, LLMTextFrame))

    def errors(self) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, ErrorFrame)]


@asynccontextmanager
async def pipeline(gw: Gateway, said: str, calls: list[Any],
                   **session: Any) -> AsyncIterator[tuple[PipelineWorker, Sink]]:
    """A running pipeline whose conversation starts with the user saying `said`."""
    settings = OpenAIRealtimeLLMService.Settings(model="gpt-realtime", session_properties=events.SessionProperties(
        output_modalities=["text"], instructions="Answer briefly.", **session))
    llm = OpenAIRealtimeLLMService(api_key=KEY, base_url=gw.ws + "/v1/realtime", settings=settings)

    async def get_weather(params: Any) -> None:
        calls.append(params.arguments)
        await params.result_callback({"temperature_c": 21})

    llm.register_function("get_weather", get_weather)
    context = LLMContext(messages=[{"role": "user", "content": said}], tools=ToolsSchema(standard_tools=[WEATHER]))
    aggregators = LLMContextAggregatorPair(context)
    sink = Sink()
    task = PipelineWorker(Pipeline([aggregators.user(), llm, sink, aggregators.assistant()]))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(task)
    running = asyncio.create_task(runner.run())
    await task.queue_frames([LLMRunFrame()])
    try:
        yield task, sink
    finally:
        await task.queue_frame(EndFrame())
        async with asyncio.timeout(5):
            await running


async def answers(sink: Sink, count: int = 1) -> None:
    async with asyncio.timeout(5):
        for _ in range(count):
            await sink.answers.get()


async def test_text_turn() -> None:
    async with gateway() as gw, pipeline(gw, "Hello there", []) as (_, sink):
        await answers(sink)
    assert sink.said() == "[livegate simulator] You said: Hello there"
    assert not sink.errors()
    no_errors(gw.recording)


async def test_tool_round_trip() -> None:
    calls: list[Any] = []
    async with gateway() as gw, pipeline(gw, TOOL_PROMPT, calls) as (_, sink):
        await answers(sink, 2)  # the call, then the answer to its output
    assert calls == [{"city": "sample"}]
    assert sink.said() == '[livegate simulator] The tool get_weather returned: {"output": {"temperature_c": 21}}'
    outputs = [e for e in gw.recording.sent() if e.get("item", {}).get("type") == "function_call_output"]
    assert [o["item"]["output"] for o in outputs] == ['{"temperature_c": 21}']
    assert not sink.errors()
    no_errors(gw.recording)


def statuses(gw: Gateway) -> list[str]:
    return [e["response"]["status"] for e in gw.recording.received() if e.get("type") == "response.done"]


async def until_done(gw: Gateway, *wanted: str) -> None:
    async with asyncio.timeout(5):
        while statuses(gw) != list(wanted):
            await asyncio.sleep(0.02)


async def test_barge_in_with_server_vad() -> None:
    async with gateway(chunk_delay=0.05) as gw, pipeline(gw, LONG_PROMPT, []) as (task, sink):
        async with asyncio.timeout(5):
            await sink.text.get()
        speech = pcm16(1.0, 8000) + pcm16(0.7, 0)  # the user talks over the answer
        await task.queue_frames([InputAudioRawFrame(audio=speech[i:i + 9600], sample_rate=24000, num_channels=1)
                                 for i in range(0, len(speech), 9600)])
        await until_done(gw, "cancelled", "completed")
    assert "input_audio_buffer.speech_started" in gw.recording.types("server")
    assert sink.said().endswith("[livegate simulator] I heard 1.5 s of audio.")
    assert not sink.errors()
    no_errors(gw.recording)


async def test_barge_in_with_its_own_turn_detection() -> None:
    # With turn detection off (pipecat's own VAD), the service clears the buffer and cancels the response
    # itself on an InterruptionFrame.
    manual = events.AudioConfiguration(input=events.AudioInput(turn_detection=False))
    async with gateway(chunk_delay=0.05) as gw, pipeline(gw, LONG_PROMPT, [], audio=manual) as (task, sink):
        async with asyncio.timeout(5):
            await sink.text.get()
        await task.queue_frame(InterruptionFrame())  # what pipecat's VAD pushes when the user talks over
        await until_done(gw, "cancelled")
    sent = gw.recording.types("client")
    assert sent.index("input_audio_buffer.clear") < sent.index("response.cancel")
    assert "input_audio_buffer.cleared" in gw.recording.types("server")
    assert not sink.errors()
    no_errors(gw.recording)
