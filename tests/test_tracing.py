"""Traces and transcripts end to end (docs/operating/observability.md): the openai SDK -> livegate -> the Gemini
Live simulator, livegate's spans received by a real OTLP/HTTP server on loopback (decoding with
opentelemetry-proto), its transcript read back through /spend/logs/{session}, its logs captured.

One session with a tool call and a goAway switch: the span tree under the client's `traceparent`, its
attributes, the turn spans' token counts against `response.done`, and no planted PII anywhere it is exported
or stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra (pip install 'livegate[otel]')")
from openai import AsyncOpenAI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from livegate.config import parse_config
from livegate.server import create_app
from livegate.simulator import GeminiLiveSimulator
from tests.support import collect, serve
from tests.test_e2e_resumption import TOOL, wait_for

MASTER = "sk-tracing-test"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
# Planted personal data: a typed turn (echoed back by the simulator in its answer), the instructions and a tool
# output carry it; none of it may reach a span, the stored transcript or a log line.
EMAIL, CARD, IBAN, PHONE = "ada.lovelace@example.com", "4111 1111 1111 1111", "GB82 WEST 1234 5698 7654 32", \
    "+44 20 7946 0958"
# Fragments too: a partial redaction leaks them. Matched as whole tokens, since a span's nanosecond timestamps, hex
# ids and ports contain short digit runs such as "4111" by chance.
PLANTED = [re.compile(rf"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])") for s in (
    EMAIL, CARD, IBAN, PHONE, "ada.lovelace", "4111", "7654 32", "7946")]


@dataclasses.dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    start: int
    end: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    resource: dict[str, Any]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


class OtlpReceiver:
    """An OTLP/HTTP trace receiver (POST /v1/traces, protobuf) on a free loopback port, in its own thread: the
    gateway's exporter posts synchronously, from its own thread or at shutdown."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = _attributes(resource_spans.resource.attributes)
                    for scope in resource_spans.scope_spans:
                        receiver.spans.extend(Span(
                            s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                            s.start_time_unix_nano, s.end_time_unix_nano, _attributes(s.attributes),
                            [(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in s.events], resource)
                            for s in scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def otlp(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver().running() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        yield receiver


def traced_config(sim_url: str, store: Path) -> Any:
    return parse_config({
        "model_list": [{"model_name": "gpt-realtime", "livegate_params": {
            "model": "gemini/gemini-3.8-live", "api_key": "AIza-tracing", "api_base": sim_url}}],
        "general_settings": {"master_key": MASTER, "store_prompts_in_spend_logs": True},
        "livegate_settings": {"otel_tracing": True, "store_path": str(store)}})


async def test_a_session_with_a_tool_call_and_a_go_away_as_a_span_tree(
        otlp: OtlpReceiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        app = create_app(traced_config(sim.url, tmp_path / "spend.db"), simulator_chunk_delay=0)
        gateway = app.state.gateway
        gateway.resumption = dataclasses.replace(gateway.resumption, switch_margin_s=0.2)
        async with serve(app) as url, httpx.AsyncClient(base_url=url, headers={
                "Authorization": f"Bearer {MASTER}"}) as http:
            key = (await http.post("/key/generate", json={"key_alias": "support-bot"})).json()["key"]
            client = AsyncOpenAI(api_key=key, websocket_base_url=url.replace("http", "ws") + "/v1")
            traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
            async with client.realtime.connect(model="gpt-realtime",
                                               extra_headers={"traceparent": traceparent}) as conn:
                await conn.session.update(session={
                    "type": "realtime", "output_modalities": ["text"], "tools": [TOOL],
                    "instructions": f"You help Ada ({EMAIL}) with the weather."})
                created = await collect(conn, "session.updated")
                session_id = next(e.session.id for e in created if e.type == "session.created")
                events = await ask(conn, f"My name is Ada, mail {EMAIL}, card {CARD}")
                events += await ask(conn, "Please call get_weather for Paris")
                call = next(e for e in events if e.type == "response.function_call_arguments.done")
                await sim.sessions[0].go_away()  # while the call's output is due: the switch waits for it
                await conn.conversation.item.create(item={
                    "type": "function_call_output", "call_id": call.call_id,
                    "output": json.dumps({"temperature_c": 21, "account": IBAN, "call_back": PHONE})})
                await conn.response.create()
                events += await collect(conn)
                await wait_for(lambda: len(sim.sessions) == 2)
                events += await ask(conn, "What did I say before?")
            logging.getLogger("livegate.test").warning("a line quoting the client: %s", f"card {CARD}")
            async with asyncio.timeout(10):
                while (logged := await http.get(f"/spend/logs/{session_id}")).status_code == 404:
                    await asyncio.sleep(0.05)
    dones = [e.response for e in events if e.type == "response.done"]
    assert len(dones) == 4 and len(sim.sessions) == 2

    spans = otlp.spans
    assert spans and {s.trace_id for s in spans} == {TRACE_ID}, "every span is in the client's trace"
    session = next(s for s in spans if s.name == "realtime gpt-realtime")
    assert session.parent == CLIENT_SPAN
    assert session.resource["service.name"] == "livegate"
    children = [s for s in spans if s is not session]
    assert all(s.parent == session.span_id for s in children), [(s.name, s.parent) for s in children]
    assert session.attributes | {
        "gen_ai.operation.name": "realtime", "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.request.model": "gpt-realtime", "gen_ai.response.model": "gemini-3.8-live",
        "gen_ai.conversation.id": session_id, "livegate.key_alias": "support-bot", "livegate.dialect": "ga",
        "livegate.transport": "websocket", "livegate.close_code": 1000,
    } == session.attributes

    # One turn span per response, its token counts exactly as its response.done says.
    turns = {s.attributes["gen_ai.response.id"]: s for s in children if s.name == "turn"}
    assert list(turns) == [r.id for r in dones]
    for done in dones:
        turn, usage = turns[done.id], done.usage
        assert turn.attributes["livegate.response.status"] == done.status == "completed"
        first = next(at for name, at, _ in turn.events if name == "first_answer_byte")
        assert turn.start <= first <= turn.end
        counted = {k: v for k, v in turn.attributes.items() if "usage" in k}
        if usage is None:  # a tool call's turn: Gemini reports its usage with the next answer
            assert counted == {}
            continue
        assert counted == {
            "gen_ai.usage.input_tokens": usage.input_tokens, "gen_ai.usage.output_tokens": usage.output_tokens,
            "livegate.usage.total_tokens": usage.total_tokens,
            "livegate.usage.input_text_tokens": usage.input_token_details.text_tokens,
            "livegate.usage.input_audio_tokens": usage.input_token_details.audio_tokens,
            "livegate.usage.input_image_tokens": usage.input_token_details.image_tokens,
            "livegate.usage.input_cached_tokens": usage.input_token_details.cached_tokens,
            "livegate.usage.output_text_tokens": usage.output_token_details.text_tokens,
            "livegate.usage.output_audio_tokens": usage.output_token_details.audio_tokens}
    # The session's totals are the usage ledger's, as billed in its spend row.
    row = logged.json()
    assert session.attributes["gen_ai.usage.input_tokens"] == row["prompt_tokens"] > 0
    assert session.attributes["gen_ai.usage.output_tokens"] == row["completion_tokens"] > 0
    assert session.attributes["livegate.cost_usd"] == pytest.approx(row["spend"])

    # The tool call: from its arguments to the client's output; the goAway switch waited for that output.
    tool = next(s for s in children if s.name == "execute_tool get_weather")
    assert tool.attributes["gen_ai.tool.call.id"] == call.call_id
    assert json.loads(tool.attributes["gen_ai.tool.call.result"]) == {
        "temperature_c": 21, "account": "[IBAN]", "call_back": "[PHONE]"}
    recovery = next(s for s in children if s.name.startswith("recovery "))
    assert recovery.name == "recovery go_away" and recovery.attributes | {
        "livegate.recovery.mode": "handle", "livegate.recovery.outcome": "resumed"} == recovery.attributes
    assert recovery.start >= tool.end, "the switch waited for the call's output"
    upstreams = sorted((s for s in children if s.name.startswith("upstream ")), key=lambda s: s.start)
    assert [(s.name, s.attributes["livegate.upstream.link"]) for s in upstreams] == [
        ("upstream first", 1), ("upstream handle", 2)]
    assert upstreams[0].start <= upstreams[0].end <= upstreams[1].end
    assert upstreams[1].start <= recovery.end, "the recovery lasts until the new connection carries the session"

    # No planted PII in the traces, the stored transcript or the logs; the transcript says what was removed.
    exported = json.dumps([dataclasses.asdict(s) for s in spans])
    transcript = logged.json()["transcript"]
    stored = json.dumps(transcript)
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("livegate", "uvicorn"))
    assert "session_end" in logs and "a line quoting the client: card [CARD]" in logs
    for secret in PLANTED:
        assert not (secret.search(exported) or secret.search(stored) or secret.search(logs)), secret.pattern
    assert transcript["instructions"] == "You help Ada ([EMAIL]) with the weather."
    assert transcript["turns"][0] == {**transcript["turns"][0], "role": "user",
                                      "text": "My name is Ada, mail [EMAIL], card [CARD]"}
    tool_output = next(t for t in transcript["turns"] if t["role"] == "tool")
    assert json.loads(tool_output["output"]) == {"temperature_c": 21, "account": "[IBAN]", "call_back": "[PHONE]"}
    assert transcript["tools"][0]["name"] == "get_weather"


async def ask(conn: Any, text: str) -> list[Any]:
    await conn.conversation.item.create(item={"type": "message", "role": "user",
                                              "content": [{"type": "input_text", "text": text}]})
    await conn.response.create()
    return await collect(conn)


def test_tracing_off_imports_no_opentelemetry() -> None:
    """Off costs nothing: a gateway without tracing never imports OpenTelemetry's SDK or exporter (FastAPI itself
    may import the small opentelemetry API package when it is installed)."""
    script = """
import sys
from livegate.config import parse_config
from livegate.server import create_app
create_app(parse_config({"model_list": [{"model_name": "m", "livegate_params": {
    "model": "gemini/gemini-3.8-live", "api_key": "AIza-x"}}]}))
import livegate.observability.session, livegate.observability.turns
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")))
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


async def test_a_passthrough_session_has_the_same_session_and_turn_spans(otlp: OtlpReceiver, tmp_path: Path) -> None:
    """/v1/gemini/live relays frames untouched; its spans come from the usage it already reads."""
    import websockets

    from tests.test_passthrough import read_turn, user_text

    async with GeminiLiveSimulator(chunk_delay=0) as sim:
        app = create_app(parse_config({
            "model_list": [{"model_name": "flash", "livegate_params": {
                "model": "gemini/gemini-3.8-live", "api_key": "AIza-tracing", "api_base": sim.url}}],
            "general_settings": {"master_key": MASTER},
            "livegate_settings": {"otel_tracing": True, "store_path": str(tmp_path / "spend.db")}}),
            simulator_chunk_delay=0)
        async with serve(app) as url:
            async with websockets.connect(url.replace("http", "ws") + "/v1/gemini/live", additional_headers={
                    "x-goog-api-key": MASTER, "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}) as ws:
                await ws.send(json.dumps({"setup": {"model": "flash",
                                                    "generationConfig": {"responseModalities": ["AUDIO"]}}}))
                await ws.recv()
                await ws.send(user_text("Hello there"))
                frames = await read_turn(ws)
            async with httpx.AsyncClient(base_url=url) as http:
                metrics = (await http.get("/metrics", headers={"Authorization": f"Bearer {MASTER}"})).text
    usage = next(f["usageMetadata"] for f in frames if "usageMetadata" in f)
    assert any("inlineData" in str(f) for f in frames), "the answer was audio"
    session = next(s for s in otlp.spans if s.name == "realtime flash")
    assert session.parent == CLIENT_SPAN and session.trace_id == TRACE_ID
    assert session.attributes | {"gen_ai.provider.name": "gcp.gemini", "gen_ai.response.model": "gemini-3.8-live",
                                 "livegate.dialect": "gemini", "livegate.transport": "passthrough",
                                 "livegate.close_code": 1000} == session.attributes
    (turn,) = [s for s in otlp.spans if s.name == "turn"]
    assert turn.parent == session.span_id
    assert turn.attributes["gen_ai.usage.input_tokens"] == usage["promptTokenCount"]
    assert turn.attributes["gen_ai.usage.output_tokens"] == usage["responseTokenCount"]
    assert session.attributes["gen_ai.usage.output_tokens"] == usage["responseTokenCount"]
    events = {name: (at, attrs) for name, at, attrs in turn.events}
    assert turn.start <= events["first_answer_byte"][0] <= events["first_audio_byte"][0] <= turn.end
    assert events["first_audio_byte"][1]["livegate.ttfab_s"] > 0
    assert 'livegate_time_to_first_audio_seconds_count{model="gemini-3.8-live"} 1.0' in metrics
