"""LiteLLM's health paths and Prometheus metrics.

    GET /health/liveliness   200 "I'm alive!" while the process serves requests
    GET /health/readiness    200 when the spend store answers and its writes succeed, else 503; JSON details
    GET /metrics             Prometheus text format (prometheus-client); no keys in any label
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livegate import __version__

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def add_health_routes(app: FastAPI, gateway: Gateway) -> None:
    async def liveliness() -> JSONResponse:
        return JSONResponse("I'm alive!")

    async def readiness() -> JSONResponse:
        state = await gateway.accounting.readiness()
        state["livegate_version"] = __version__
        return JSONResponse(state, status_code=200 if state["status"] == "healthy" else 503)

    async def metrics() -> Response:
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
