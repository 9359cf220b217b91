"""OpenTelemetry traces of realtime sessions (the `otel` extra; imported only when tracing is on).

Spans, each a child of the session's (itself a child of the client's `traceparent`, when it sent one):
- `realtime <model>` (the session, kind SERVER): the GenAI attributes (gen_ai.operation.name `realtime`,
  gen_ai.provider.name, gen_ai.request.model, gen_ai.usage.* with livegate.usage.* by modality from the usage
  ledger), the cost, and livegate's (key alias, team, dialect, transport, close code and reason);
- `turn` (user input end -> first answer byte -> turn complete): events `first_answer_byte` and
  `first_audio_byte` (with `livegate.ttfab_s`), and the response's id, status and usage, exactly as its
  response.done says;
- `execute_tool <name>` (a tool call: its arguments -> the client's output), with the arguments redacted when
  transcripts are kept (store_prompts_in_spend_logs), else none;
- `upstream <mode>` (one Gemini connection, opening to close);
- `recovery <why>` (a switch: go_away, reconfigure, deadline or recovery, until the new connection carries
  the session), and `guardrail <name>` (one check: its stage, verdict and latency).
The exporter is OTLP/HTTP, configured by the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER...).
No span carries a secret; text (tool arguments) goes through the redactor first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from livegate import __version__
from livegate.observability.guardrails import Verdict
from livegate.observability.redaction import Redactor
from livegate.translation.observer import SessionObserver

PROVIDERS = {"aistudio": "gcp.gemini", "vertex": "gcp.vertex_ai"}


class Tracing:
    """The gateway's tracer provider and exporter (one per app; never the global provider)."""

    def __init__(self, exporter: Any = None) -> None:
        """`exporter`: a SpanExporter (the bench's drops spans); by default OTLP/HTTP as OTEL_* configure it."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "livegate"}
        self.provider = TracerProvider(resource=Resource.create({**attributes, "service.version": __version__}))
        self.provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("livegate", __version__)
        self.propagator = TraceContextTextMapPropagator()

    def session(self, headers: Mapping[str, str], attributes: dict[str, Any], *, name: str,
                redactor: Redactor | None = None) -> SessionTracer:
        """A session's tracer: its span starts now, under the client's `traceparent` when there is one."""
        carrier = {k: v for k, v in ((k, headers.get(k)) for k in ("traceparent", "tracestate")) if v}
        parent = self.propagator.extract(carrier) if carrier else None
        return SessionTracer(self, parent, attributes, name, redactor)

    def shutdown(self) -> None:
        self.provider.shutdown()  # exports what is buffered


def _attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != ""}


def usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAI's usage object (response.done) as span attributes."""
    if not usage:
        return {}
    inp, out = usage.get("input_token_details") or {}, usage.get("output_token_details") or {}
    return _attributes({
        "gen_ai.usage.input_tokens": usage.get("input_tokens"),
        "gen_ai.usage.output_tokens": usage.get("output_tokens"),
        "livegate.usage.total_tokens": usage.get("total_tokens"),
        "livegate.usage.input_text_tokens": inp.get("text_tokens"),
        "livegate.usage.input_audio_tokens": inp.get("audio_tokens"),
        "livegate.usage.input_image_tokens": inp.get("image_tokens"),
        "livegate.usage.input_cached_tokens": inp.get("cached_tokens"),
        "livegate.usage.output_text_tokens": out.get("text_tokens"),
        "livegate.usage.output_audio_tokens": out.get("audio_tokens"),
    })


class SessionTracer(SessionObserver):
    """One session's spans. An observer of its session core (connections, switches, guardrails), the sink of
    its TurnWatch (turns, tool calls)."""

    def __init__(self, tracing: Tracing, parent: Any, attributes: dict[str, Any], name: str,
                 redactor: Redactor | None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracing.tracer
        self.redactor = redactor  # set when tool arguments may be recorded (transcripts kept)
        self.span = self.tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER,
                                           attributes=_attributes(attributes))
        self.context = trace.set_span_in_context(self.span)
        self._turns: dict[str, tuple[Any, bool]] = {}  # response id -> (span, first answer byte seen)
        self._tools: dict[str, Any] = {}
        self._links: dict[int, Any] = {}
        self._recovery: Any = None

    def _child(self, name: str, attributes: dict[str, Any], start_ns: int | None = None) -> Any:
        return self.tracer.start_span(name, context=self.context, attributes=_attributes(attributes),
                                      start_time=start_ns)

    # --- turns and tools (TurnWatch) ------------------------------------------------------------------

    def turn_started(self, response_id: str, started_ns: int) -> None:
        self._turns[response_id] = (self._child("turn", {"gen_ai.response.id": response_id}, started_ns), False)

    def first_byte(self, response_id: str, at_ns: int, audio: bool) -> None:
        span, seen = self._turns.get(response_id, (None, True))
        if span is None:
            return
        if not seen:
            span.add_event("first_answer_byte", timestamp=at_ns)
            self._turns[response_id] = (span, True)
        if audio:
            start = getattr(span, "start_time", None) or at_ns
            span.add_event("first_audio_byte", {"livegate.ttfab_s": (at_ns - start) / 1e9}, timestamp=at_ns)

    def turn_done(self, response: dict[str, Any], at_ns: int) -> None:
        span, _ = self._turns.pop(str(response.get("id")), (None, False))
        if span is None:
            return
        details = response.get("status_details") or {}
        span.set_attributes(_attributes({"livegate.response.status": response.get("status"),
                                         "gen_ai.response.finish_reasons": [details.get("reason") or
                                                                            response.get("status") or "completed"],
                                         **usage_attributes(response.get("usage"))}))
        span.end(end_time=at_ns)

    def tool_called(self, call_id: str, name: str, arguments: str, at_ns: int) -> None:
        attrs: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                 "gen_ai.tool.call.id": call_id}
        if self.redactor is not None:
            attrs["gen_ai.tool.call.arguments"] = self.redactor.redact(arguments)
        self._tools[call_id] = self._child(f"execute_tool {name}", attrs, at_ns)

    def tool_answered(self, call_id: str, output: Any, at_ns: int) -> None:
        span = self._tools.pop(call_id, None)
        if span is not None:
            if self.redactor is not None:
                text = output if isinstance(output, str) else json.dumps(output)
                span.set_attribute("gen_ai.tool.call.result", self.redactor.redact(text))
            span.end(end_time=at_ns)

    # --- connections, switches, guardrails (the session core) ------------------------------------------

    def upstream_opening(self, link: int, mode: str) -> None:
        self._links[link] = self._child(f"upstream {mode}", {"livegate.upstream.link": link,
                                                             "livegate.upstream.mode": mode})

    def upstream_opened(self, link: int, mode: str) -> None:
        span = self._links.get(link)
        if span is not None:
            span.add_event("opened")
        for old in [n for n in self._links if n < link]:  # the connection the session moved away from
            self._links.pop(old).end()
        if self._recovery is not None:
            self._recovery.set_attribute("livegate.recovery.outcome", "resumed" if mode == "handle" else mode)
            self._recovery.end()
            self._recovery = None

    def upstream_failed(self, link: int, mode: str, kind: str) -> None:
        span = self._links.pop(link, None)
        if span is not None:
            span.set_attribute("livegate.upstream.failure", kind)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, kind))
            span.end()

    def upstream_lost(self, link: int, code: int, recovering: bool) -> None:
        span = self._links.pop(link, None)
        if span is not None:
            span.set_attributes({"livegate.upstream.close_code": code, "livegate.upstream.recovering": recovering})
            span.end()

    def switch_started(self, mode: str, cut: bool, why: str) -> None:
        if self._recovery is not None:
            self._recovery.end()
        self._recovery = self._child(f"recovery {why}", {"livegate.recovery.why": why, "livegate.recovery.mode": mode,
                                                         "livegate.recovery.cut": cut})

    def guardrail_checked(self, name: str, stage: str, verdict: Verdict, seconds: float) -> None:
        end = time.time_ns()
        span = self._child(f"guardrail {name}", {"gen_ai.guardrail.name": name, "livegate.guardrail.stage": stage,
                                                 "livegate.guardrail.verdict": verdict.action,
                                                 "livegate.guardrail.latency_s": seconds},
                           end - int(seconds * 1e9))
        span.end(end_time=end)

    # --- the end ----------------------------------------------------------------------------------------

    def finish(self, close_code: int, reason: str, attributes: dict[str, Any]) -> None:
        now = time.time_ns()
        for span, _ in self._turns.values():
            span.set_attribute("livegate.response.status", "unfinished")
            span.end(end_time=now)
        for span in [*self._tools.values(), *self._links.values()]:
            span.end(end_time=now)
        if self._recovery is not None:  # the session ended while it was moving
            self._recovery.set_attribute("livegate.recovery.outcome", "session_ended")
            self._recovery.end(end_time=now)
        self._turns.clear()
        self._tools.clear()
        self._links.clear()
        self.span.set_attributes(_attributes({"livegate.close_code": close_code,
                                              "livegate.close_reason": reason[:200], **attributes}))
        if close_code not in (1000, 1005):
            self.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"closed {close_code}"))
        self.span.end(end_time=now)
