"""The FastAPI application: `/v1/realtime` (handshake checks of key, model and dialect, then a
RealtimeSession) and the passthrough routes.

Realtime refusals happen before any upstream connection, as livegate/close_codes.py `refuse` says (an
OpenAI `error` event, then 4000 + the HTTP status it stands for): README "Connecting".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse

from livegate import __version__
from livegate.accounting.deployment_counters import SharedDeploymentCounters
from livegate.accounting.gate import Accounting, Grant, Principal
from livegate.close_codes import REFUSAL_BASE, Refusal, refuse
from livegate.config import Config, ModelRoute
from livegate.mapping import Mappings, load_mappings
from livegate.mapping.expressions import make_unmade
from livegate.observability.redaction import install_log_redaction
from livegate.observability.session import SessionWatch, watch_session
from livegate.server import auth
from livegate.server.accounting_routes import add_accounting_routes, build_accounting
from livegate.server.client_io import ExposeTransportAbort
from livegate.server.deployment_health import add_deployment_health_route
from livegate.server.hygiene import install_log_filters
from livegate.server.passthrough import add_passthrough_routes
from livegate.server.realtime import RealtimeSession
from livegate.server.realtime_route import RealtimeRoute, SessionSocket
from livegate.server.reconnect import take_over
from livegate.server.serving import configure as configure_http
from livegate.takeover.seal import Sealer
from livegate.takeover.service import Takeover
from livegate.translation.capabilities import shipped_table
from livegate.translation.resumption import ResumptionPolicy
from livegate.translation.translator import Translator
from livegate.translation.validation import ClientEventValidator
from livegate.upstream.base import Provider
from livegate.upstream.pool import Placement, Pools
from livegate.webrtc.routes import add_webrtc_routes

if TYPE_CHECKING:
    from livegate.observability.tracing import Tracing

log = logging.getLogger("livegate")

BETA_HEADER_VALUE = "realtime=v1"
_PLAYGROUND = Path(__file__).parent / "static" / "playground.html"


@dataclass
class Gateway:
    """What every connection shares: config, compiled mappings, schema validators, the simulator."""

    config: Config
    mappings: Mappings
    validator: ClientEventValidator
    accounting: Accounting
    pools: Pools  # the model groups' deployments (livegate/upstream/pool.py)
    simulator_url: str | None = None
    resumption: ResumptionPolicy | None = None  # mappings/resumption.yaml
    tracing: Tracing | None = None  # OpenTelemetry (livegate_settings.otel_tracing)
    detached: dict[str, RealtimeSession] = field(default_factory=dict)  # sessions awaiting their client
    takeover: Takeover = field(init=False)  # sessions in the shared store, the drain (livegate/takeover/)


async def _make_mappings_in_idle_time() -> None:
    """The mappings' expressions and templates made into Python a few at a time (about 1 ms per step), so the
    first sessions' turn edges do not pay for hundreds of them (mapping/expressions.py)."""
    while make_unmade(6):
        await asyncio.sleep(0.001)


def _needs_simulator(config: Config) -> bool:
    return any(r.provider == "simulator" and not r.api_base for r in config.routes)


def create_app(config: Config, mappings: Mappings | None = None, *, simulator_chunk_delay: float = 0.02) -> FastAPI:
    mappings = mappings or load_mappings()
    accounting = build_accounting(config)
    # a fleet's deployments are counted where its keys are (Redis, else PostgreSQL); one process counts its own
    counters = SharedDeploymentCounters(accounting.limits) if accounting.limits.shared is not None else None
    gateway = Gateway(config, mappings, ClientEventValidator(max_frame_bytes=config.max_client_frame_bytes),
                      accounting, Pools(config, mappings.models, registry=accounting.metrics.registry,
                                        counters=counters))
    gateway.resumption = gateway.mappings.resumption or ResumptionPolicy.load()
    gateway.takeover = Takeover(gateway.accounting.store.db, gateway.accounting.instance_id,
                                grace_s=config.reattach_grace_s, drain_timeout_s=config.drain_timeout_s,
                                sealer=Sealer(config.salt_key, config.master_key))
    install_log_redaction(config.observability.redactor)
    if config.observability.otel_tracing:
        from livegate.observability.tracing import Tracing

        gateway.tracing = Tracing()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not config.master_key:
            log.warning("no general_settings.master_key configured: this gateway is open to anyone who can reach it")
        log.info("event loop: %s", "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop")
                 else "asyncio")  # uvloop when installed (the `uvloop` extra): docs/internals/performance.md
        await gateway.accounting.start()  # the spend store; stopped (queued spend flushed) on SIGTERM below
        log.info("spend store: %s", gateway.accounting.store.db.description)
        await gateway.takeover.start()  # sessions' state in the same store, for another instance to take over
        simulator = None
        if _needs_simulator(config):
            from livegate.simulator import GeminiLiveSimulator

            simulator = GeminiLiveSimulator(chunk_delay=simulator_chunk_delay)
            await simulator.start(host="127.0.0.1", port=0)
            gateway.simulator_url = gateway.pools.simulator_url = simulator.url
            log.info("local Gemini Live simulator on %s (a stand-in, not a model)", simulator.url)
        checks = (asyncio.create_task(gateway.pools.check_forever()) if config.pools.background_health_checks
                  else None)
        making = asyncio.create_task(_make_mappings_in_idle_time())
        try:
            yield
        finally:
            making.cancel()
            if checks is not None:
                checks.cancel()
            await app.state.webrtc_calls.hang_up_all()  # calls end (their spend rows queued) before the store stops
            if simulator is not None:
                await simulator.stop()
            await gateway.takeover.stop()  # what sessions queued is written before the store closes
            await gateway.accounting.stop()
            await config.observability.guardrails.close()
            if gateway.tracing is not None:
                # exports the spans still buffered: a blocking HTTP post, kept off the event loop
                await asyncio.to_thread(gateway.tracing.shutdown)

    # No /docs, /redoc or /openapi.json: they would describe the gateway to anyone, without a key.
    app = FastAPI(title="livegate", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.gateway = gateway

    async def realtime(ws: WebSocket, session_ws: SessionSocket) -> None:
        await _realtime(ws, gateway, session_ws)

    # /v1/realtime (and /realtime, LiteLLM's path) bypass FastAPI's router: realtime_route.py says why.
    app.add_middleware(RealtimeRoute, paths=REALTIME_PATHS, handler=realtime)
    app.add_middleware(ExposeTransportAbort)
    install_log_filters()
    configure_http(config)

    add_deployment_health_route(app, gateway)

    @app.get("/playground", include_in_schema=False)
    async def playground() -> HTMLResponse:
        """A browser client: mic in, audio out, transcripts, the event log (README: Playground)."""
        return HTMLResponse(_PLAYGROUND.read_text())

    add_passthrough_routes(app, gateway)
    add_accounting_routes(app, gateway)
    app.state.webrtc_calls = add_webrtc_routes(app, gateway)  # POST /v1/realtime/calls (livegate/webrtc/)
    return app


REALTIME_PATHS = frozenset({"/v1/realtime", "/realtime"})
# The model name a `?intent=transcription` URL without `?model=` is routed by (OpenAI's transcription model).
TRANSCRIPTION_MODEL = "gpt-4o-transcribe"


async def _refuse(ws: WebSocket, refusal: Refusal) -> None:
    await refuse(ws, refusal, "openai", subprotocol=_chosen_subprotocol(list(ws.scope.get("subprotocols") or [])))


def _route(gateway: Gateway, model: str | None) -> tuple[ModelRoute | None, Refusal | None]:
    if not model:
        return None, Refusal(400, "Missing required query parameter: 'model'.", "missing_model")
    route = gateway.config.route(model)
    if route is None:
        return None, Refusal(404, f"The model '{model}' does not exist on this gateway.", "model_not_found")
    return route, None


async def place(gateway: Gateway, route: ModelRoute, model: str, grant: Grant) -> Placement | Refusal:
    """The deployment of `route`'s pool (or of a fallback) an admitted session goes to, its grant priced for that
    deployment; or why none can take it (the grant is then finished). Admission comes first, so a key refused for
    its own limits counts nothing against a deployment's."""
    placement = await gateway.pools.place(route)
    refusal = placement if isinstance(placement, Refusal) else None
    if isinstance(placement, Placement) and placement.route is not route:  # its own model_info, or a fallback
        refusal = grant.bind_model(model, placement.route.model_id, placement.route.model_info)
        if refusal is not None:
            await placement.release()
    if refusal is not None:
        log.warning("no deployment for a session on %r: %s", route.model_name, refusal.message)
        await grant.finish(REFUSAL_BASE + refusal.status, "failure", refusal.message)
        return refusal
    return placement


def session_translator(gateway: Gateway, route: ModelRoute, model: str, provider: Provider, grant: Grant, *,
                       beta: bool, intent: str | None = None, transport: str | None = None,
                       watch: SessionWatch | None = None) -> Translator:
    """The translator of one realtime session (WebSocket or WebRTC call), metering into the grant's ledger."""
    compat = gateway.config.compat(route)
    context = {"guardrails": watch.guardrails.stages if watch is not None and watch.guardrails is not None else {},
               "model": model, "setup_model": provider.setup_model(), "backend": provider.backend, "intent": intent,
               "capabilities": (gateway.mappings.models or shipped_table()).capabilities(
                   route.model_id, provider.backend, route.model_info),
               "litellm_compat": compat, "features": route.gemini_features or {}, "voices": route.voices or {}}
    if transport is not None:
        context["transport"] = transport
    if grant.session and grant.principal.limits.budgeted():
        # a response's output is reserved against the budgets at this cap when the client sets none, so Gemini
        # is held to it (mappings/shapes/session.yaml): the reservation is a true worst case
        context["output_token_cap"] = grant.accounting.reservation_output_tokens
    # With no header, LiteLLM compatibility starts in beta (LiteLLM's clients speak it); either way the
    # first session.update's shape may still switch the dialect.
    return Translator(gateway.mappings, dialect="beta" if beta or compat else "ga", context=context,
                      validator=gateway.validator, sniff_dialect=not beta, ledger=grant.meter,
                      wire=True)  # audio deltas and the like as pre-serialised JSON (mapping/wire.py)


async def _realtime(ws: WebSocket, gateway: Gateway, session_ws: SessionSocket) -> None:
    """The handshake on `ws` (Starlette's WebSocket); once accepted, the session runs on `session_ws`."""
    offered = list(ws.scope.get("subprotocols") or [])
    who = await auth.principal(gateway, auth.client_key(ws.headers, offered), route="/v1/realtime", realtime=True)
    if isinstance(who, Refusal):
        await _refuse(ws, who)
        return
    model = ws.query_params.get("model")
    if not model and who.secret is not None and who.secret.session:  # a client secret may fix the model
        model = who.secret.session.get("model")
    intent = ws.query_params.get("intent")
    if intent is not None and intent != "transcription":
        await _refuse(ws, Refusal(400, f"Unknown intent '{intent[:64]}'; the only intent is 'transcription'.",
                                  "invalid_intent"))
        return
    if not model and intent == "transcription":  # OpenAI's transcription URL names no model
        model = TRANSCRIPTION_MODEL
    route, problem = _route(gateway, model)
    if problem is not None:
        await _refuse(ws, problem)
        return
    assert route is not None and model is not None
    reattaching = ws.query_params.get("session_id")
    if reattaching is not None:
        await _reattach(ws, gateway, who, model, route, reattaching, offered, session_ws)
        return
    grant = await auth.admit(gateway, who, route="/v1/realtime", model_route=route, model=model, headers=ws.headers)
    if isinstance(grant, Refusal):
        await _refuse(ws, grant)
        return
    placement = await place(gateway, route, model, grant)
    if isinstance(placement, Refusal):
        await _refuse(ws, placement)
        return
    beta = ws.headers.get("openai-beta", "").lower() == BETA_HEADER_VALUE or auth.BETA_PROTOCOL in offered
    provider = gateway.pools.provider(placement.route)
    watch = watch_session(gateway, placement.route, model, provider.backend, grant, ws.headers, transport="websocket",
                          dialect="beta" if beta else "ga")
    translator = session_translator(gateway, placement.route, model, provider, grant, beta=beta, intent=intent,
                                    watch=watch)
    try:
        await ws.accept(subprotocol=_chosen_subprotocol(offered))
    except BaseException:
        await placement.release()
        await grant.finish(None, "failure", "handshake failed")
        raise
    await RealtimeSession(session_ws, translator, provider, model, gateway.config.timeouts, grant=grant,
                          policy=gateway.resumption, detached=gateway.detached,
                          reattach_grace_s=gateway.config.reattach_grace_s, placement=placement,
                          watchdog=gateway.config.watchdog, takeover=gateway.takeover, watch=watch,
                          keeper=gateway.takeover.keeper(grant.principal.opener, model, grant.session_id)).run()


async def _reattach(ws: WebSocket, gateway: Gateway, who: Principal, model: str, route: ModelRoute,
                    session_id: str, offered: list[str], session_ws: SessionSocket) -> None:
    """A client whose connection dropped takes its session back (`?session_id=`). Only the key or client
    secret that opened the session (or the master key) may (Principal.may_reattach); the session's own
    admission and accounting carry on. A session this process does not hold is taken over from the shared
    store (server/reconnect.py), under the same rule (Principal.opener)."""
    session = gateway.detached.get(session_id)
    if session is None:
        await take_over(ws, gateway, who, model, route, session_id, _chosen_subprotocol(offered))
        return
    owner = session.grant.principal if session.grant is not None else None
    if session.model != model or (owner is not None and not who.may_reattach(owner)):
        await _refuse(ws, Refusal(404, f"No session '{session_id}' is waiting for its client on this gateway "
                                       "(it ended, or its reattach grace period passed).", "session_not_found"))
        return
    await ws.accept(subprotocol=_chosen_subprotocol(offered))
    await session.reattach(session_ws)


def _chosen_subprotocol(offered: list[str]) -> str | None:
    """A browser offering subprotocols needs one echoed back; never echo the one carrying the key."""
    return next((p for p in offered if p == "realtime"), None) or next(
        (p for p in offered if not p.startswith(auth.INSECURE_KEY_PROTOCOL)), None)
