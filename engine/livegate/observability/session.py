"""What watches one realtime session besides its accounting grant: its turns (the time-to-first-audio
histogram), its tracer (when tracing is on), its transcript (when kept), and the guardrails it runs. Built
once per session by `watch_session`; the pump tells it the end (`finish`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livegate.observability.guardrails import SessionGuardrails, Verdict, names_in
from livegate.observability.passthrough import PassthroughTurns
from livegate.observability.tracing import PROVIDERS
from livegate.observability.transcripts import TranscriptRecorder
from livegate.observability.turns import TurnWatch
from livegate.translation.observer import SessionObserver

if TYPE_CHECKING:
    from livegate.accounting.gate import Grant
    from livegate.config import ModelRoute
    from livegate.observability.tracing import SessionTracer, Tracing

log = logging.getLogger("livegate.observability")


@dataclass
class SessionWatch:
    observers: list[SessionObserver] = field(default_factory=list)
    guardrails: SessionGuardrails | None = None
    tracer: SessionTracer | None = None
    transcript: TranscriptRecorder | None = None

    def finish(self, grant: Grant | None, close_code: int, reason: str, dialect: str, session_id: str | None) -> None:
        """The session ended (before its grant writes the spend row: the transcript goes with it)."""
        if grant is not None:
            grant.client_session_id = session_id
        if self.transcript is not None and grant is not None:
            grant.transcript = json.dumps(self.transcript.result(), separators=(",", ":"))
        if self.tracer is not None:
            attributes: dict[str, Any] = {"livegate.dialect": dialect, "gen_ai.conversation.id": session_id}
            if grant is not None:
                usage = grant.meter.current()
                cost = grant.cost()
                billed = usage.billed()
                attributes.update({
                    "gen_ai.usage.input_tokens": usage.input_tokens, "gen_ai.usage.output_tokens": usage.output_tokens,
                    **{f"livegate.usage.{name}_tokens": count for name, count in billed.items()
                       if not name.endswith("_gap")},
                    "livegate.cost_usd": None if cost is None else round(cost.total, 9),
                    "livegate.turns": grant.meter.turns,
                })
            try:
                self.tracer.finish(close_code, reason, attributes)
            except Exception:  # tracing never takes a session down
                log.exception("could not end the session's span")


def _attributes(route: ModelRoute, model: str, backend: str, grant: Grant, transport: str,
                dialect: str) -> dict[str, Any]:
    """A session span's attributes known at its start (GenAI semantic conventions, then livegate's)."""
    key = grant.principal.key
    return {
        "gen_ai.operation.name": "realtime", "gen_ai.provider.name": PROVIDERS.get(backend, backend),
        "gen_ai.request.model": model, "gen_ai.response.model": route.model_id,
        "livegate.session_id": grant.session_id, "livegate.key_alias": key.key_alias if key else None,
        "livegate.team_id": key.team_id if key else None, "livegate.user_id": key.user_id if key else None,
        "livegate.route": route.model_name, "livegate.transport": transport, "livegate.dialect": dialect,
    }


def watch_passthrough(gateway: Any, route: ModelRoute, model: str, backend: str, grant: Grant,
                      headers: Mapping[str, str]) -> tuple[SessionWatch, PassthroughTurns]:
    """The watchers of a native Gemini Live passthrough session, once its setup named the model: the same
    session and turn spans and time-to-first-audio histogram, read from the frames it relays."""
    watch = SessionWatch()
    tracing: Tracing | None = getattr(gateway, "tracing", None)
    if tracing is not None:
        watch.tracer = tracing.session(headers, _attributes(route, model, backend, grant, "passthrough", "gemini"),
                                       name=f"realtime {model}")
    histogram = grant.accounting.metrics.time_to_first_audio.labels(route.model_id)
    return watch, PassthroughTurns(grant.meter, histogram.observe, watch.tracer)


def watch_session(gateway: Any, route: ModelRoute, model: str, backend: str, grant: Grant,
                  headers: Mapping[str, str], *, transport: str, dialect: str) -> SessionWatch:
    """The watchers of one realtime session (WebSocket or WebRTC call), by the gateway's settings."""
    settings = gateway.config.observability
    principal = grant.principal
    named = [*route.guardrails, *names_in(principal.key.metadata if principal.key else None),
             *names_in(principal.team.metadata if principal.team else None)]
    watch = SessionWatch(guardrails=settings.guardrails.for_session(named, grant.session_id))
    tracing: Tracing | None = getattr(gateway, "tracing", None)
    if tracing is not None:
        watch.tracer = tracing.session(headers, _attributes(route, model, backend, grant, transport, dialect),
                                       name=f"realtime {model}",
                                       redactor=settings.redactor if settings.store_prompts else None)
        watch.observers.append(watch.tracer)
        if watch.guardrails is not None:
            watch.guardrails.observers.append(watch.tracer.guardrail_checked)
    histogram = grant.accounting.metrics.time_to_first_audio.labels(route.model_id)
    watch.observers.insert(0, TurnWatch(histogram.observe, watch.tracer))
    if settings.store_prompts:
        watch.transcript = TranscriptRecorder(settings.redactor, settings.transcript_max_chars)
        watch.observers.append(watch.transcript)
    if watch.guardrails is not None:
        latency = grant.accounting.metrics.guardrail_latency

        def observe(name: str, stage: str, verdict: Verdict, seconds: float) -> None:
            latency.labels(name, stage, verdict.action).observe(seconds)

        watch.guardrails.observers.append(observe)
    return watch
