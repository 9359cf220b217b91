"""The FastAPI application: handshake checks (key, model, dialect), then a RealtimeSession.

Refusals happen before the WebSocket is accepted and before any upstream connection: the client gets
an HTTP status with a JSON reason (401 key, 403 model not allowed, 404 unknown model).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse

from livegate import __version__
from livegate.config import Config, ModelRoute
from livegate.mapping import Mappings, load_mappings
from livegate.models import shipped_table
from livegate.server import auth
from livegate.server.passthrough import add_passthrough_routes
from livegate.server.realtime import RealtimeSession
from livegate.translator import Translator
from livegate.upstream.base import provider_for
from livegate.upstream.resumption import ResumptionPolicy
from livegate.validation import ClientEventValidator

log = logging.getLogger("livegate")

BETA_HEADER_VALUE = "realtime=v1"


@dataclass
class Gateway:
    """What every connection shares: config, compiled mappings, schema validators, the simulator."""

    config: Config
    mappings: Mappings
    validator: ClientEventValidator
    simulator_url: str | None = None
    resumption: ResumptionPolicy | None = None  # mappings/resumption.yaml
    detached: dict[str, RealtimeSession] = field(default_factory=dict)  # sessions awaiting their client


def _needs_simulator(config: Config) -> bool:
    return any(r.provider == "simulator" and not r.api_base for r in config.routes)


def create_app(config: Config, mappings: Mappings | None = None, *, simulator_chunk_delay: float = 0.02) -> FastAPI:
    gateway = Gateway(config, mappings or load_mappings(),
                      ClientEventValidator(max_frame_bytes=config.max_client_frame_bytes))
    gateway.resumption = gateway.mappings.resumption or ResumptionPolicy.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not config.master_key:
            log.warning("no general_settings.master_key configured: this gateway is open to anyone who can reach it")
        simulator = None
        if _needs_simulator(config):
            from livegate.simulator import GeminiLiveSimulator

            simulator = GeminiLiveSimulator(chunk_delay=simulator_chunk_delay)
            await simulator.start(host="127.0.0.1", port=0)
            gateway.simulator_url = simulator.url
            log.info("local Gemini Live simulator on %s (a stand-in, not a model)", simulator.url)
        try:
            yield
        finally:
            if simulator is not None:
                await simulator.stop()

    app = FastAPI(title="livegate", version=__version__, lifespan=lifespan)
    app.state.gateway = gateway

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/v1/realtime")
    @app.websocket("/realtime")
    async def realtime(ws: WebSocket) -> None:
        await _realtime(ws, gateway)

    add_passthrough_routes(app, gateway)
    return app


async def _refuse(ws: WebSocket, status: int, message: str, code: str) -> None:
    body = {"error": {"type": "invalid_request_error", "code": code, "message": message}}
    await ws.send_denial_response(JSONResponse(body, status_code=status))


def _route(gateway: Gateway, model: str | None) -> tuple[ModelRoute | None, tuple[int, str, str] | None]:
    if not model:
        return None, (400, "Missing required query parameter: 'model'.", "missing_model")
    route = gateway.config.route(model)
    if route is None:
        return None, (404, f"The model '{model}' does not exist on this gateway.", "model_not_found")
    return route, None


async def _realtime(ws: WebSocket, gateway: Gateway) -> None:
    offered = list(ws.scope.get("subprotocols") or [])
    refusal = auth.refusal(gateway.config, auth.client_key(ws.headers, offered))
    if refusal is not None:
        await _refuse(ws, refusal[0], refusal[1], "invalid_api_key")
        return
    model = ws.query_params.get("model")
    route, problem = _route(gateway, model)
    if problem is not None:
        await _refuse(ws, *problem)
        return
    assert route is not None and model is not None
    beta = ws.headers.get("openai-beta", "").lower() == BETA_HEADER_VALUE or auth.BETA_PROTOCOL in offered
    reattaching = ws.query_params.get("session_id")
    if reattaching is not None:
        session = gateway.detached.get(reattaching)
        if session is None or session.model != model:
            await _refuse(ws, 404, f"No session '{reattaching}' is waiting for its client on this gateway "
                                   "(it ended, or its reattach grace period passed).", "session_not_found")
            return
        await ws.accept(subprotocol=_chosen_subprotocol(offered))
        await session.reattach(ws)
        return
    provider = provider_for(route, gateway.config, gateway.simulator_url)
    context = {"model": model, "setup_model": provider.setup_model(), "backend": provider.backend,
               "capabilities": (gateway.mappings.models or shipped_table()).capabilities(
                   route.model_id, provider.backend, route.model_info)}
    translator = Translator(gateway.mappings, dialect="beta" if beta else "ga", context=context,
                            validator=gateway.validator)
    await ws.accept(subprotocol=_chosen_subprotocol(offered))
    await RealtimeSession(ws, translator, provider, model, gateway.resumption, detached=gateway.detached,
                          reattach_grace_s=gateway.config.reattach_grace_s).run()


def _chosen_subprotocol(offered: list[str]) -> str | None:
    """A browser offering subprotocols needs one echoed back; never echo the one carrying the key."""
    return next((p for p in offered if p == "realtime"), None) or next(
        (p for p in offered if not p.startswith(auth.INSECURE_KEY_PROTOCOL)), None)
