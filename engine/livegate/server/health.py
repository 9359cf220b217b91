"""LiteLLM's health paths and Prometheus metrics.

    GET /health/liveliness   200 "I'm alive!" while the process serves requests
    GET /health/readiness    200 when the spend store answers and its writes succeed, else 503 (also while
                             draining after SIGTERM: status "draining"); JSON details
    GET /metrics             Prometheus text format (prometheus-client); no keys in any label

Open by default, as LiteLLM's are; with `require_master_key_for_monitoring` (or LiteLLM's
`require_auth_for_metrics_endpoint`) /metrics and readiness answer 401 without the master key. Liveliness
stays open: an orchestrator's liveness probe must not need a secret.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livegate import __version__
from livegate.server.auth import client_key

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def add_health_routes(app: FastAPI, gateway: Gateway) -> None:
    async def liveliness() -> JSONResponse:
        return JSONResponse("I'm alive!")

    def refused(request: Request) -> JSONResponse | None:
        """401 unless the request carries the master key, where the config asks for it."""
        master = gateway.config.master_key
        if not gateway.config.monitoring_needs_master_key or master is None:
            return None
        key = client_key(request.headers)
        if key is not None and hmac.compare_digest(key.encode(), master.encode()):
            return None
        return JSONResponse({"error": {"type": "invalid_request_error", "code": "invalid_api_key", "message":
                                       "This endpoint needs the master key (require_master_key_for_monitoring)."}},
                            status_code=401)

    async def readiness(request: Request) -> JSONResponse:
        if (denied := refused(request)) is not None:
            return denied
        state = await gateway.accounting.readiness()
        state["livegate_version"] = __version__
        if gateway.takeover.draining:  # SIGTERM: balancers stop sending new sessions here
            state["status"] = "draining"
        return JSONResponse(state, status_code=200 if state["status"] == "healthy" else 503)

    async def metrics(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        accounting = gateway.accounting
        m = accounting.metrics
        m.store_backlog.set(accounting.writer.backlog)
        m.store_dropped.set(accounting.writer.dropped)
        m.store_up.set(0 if accounting.writer.error else 1)
        for grant in list(accounting.grants):
            grant.flush_counters()
        await gateway.pools.refresh_metrics()
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    for path in ("/health/liveliness", "/health/liveness"):
        app.add_api_route(path, liveliness, methods=["GET"], include_in_schema=False)
    app.add_api_route("/health/readiness", readiness, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
