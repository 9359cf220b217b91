"""`GET /health`: LiteLLM's deployment health check, a real Gemini Live setup handshake against each deployment.

    GET /health                        no key: {"status": "ok"} at once (no handshake; a cheap probe)
    GET /health  (the master key)      every deployment checked: {healthy_endpoints, unhealthy_endpoints, ...}
    GET /health?model=NAME             the deployments of one model group

With `general_settings.background_health_checks`, the deployments are checked every `health_check_interval`
seconds and /health answers from the latest round (a deployment not yet checked is checked then). A virtual
key gets 403: a check opens a session on every deployment, so it is the operator's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from livegate.close_codes import Refusal
from livegate.server import auth
from livegate.upstream.pool import summary

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def add_deployment_health_route(app: FastAPI, gateway: Gateway) -> None:
    async def health(request: Request) -> JSONResponse:
        key = auth.client_key(request.headers)
        if key is None:
            return JSONResponse({"status": "ok"})
        who = await gateway.accounting.principal(key)
        if isinstance(who, Refusal):
            return JSONResponse(who.body(), status_code=who.status)
        if who.kind == "key":
            refusal = Refusal(403, "Deployment health checks open a Gemini Live session on every deployment: "
                                   "they take the master key.", "forbidden")
            return JSONResponse(refusal.body(), status_code=403)
        model = request.query_params.get("model")
        pools = gateway.pools
        if model is not None and not pools.group(model):
            refusal = Refusal(404, f"No model_list entry is named '{model[:200]}'.", "model_not_found")
            return JSONResponse(refusal.body(), status_code=404)
        routes = [r for r in gateway.config.routes if model is None or r.model_name == model]
        if gateway.config.pools.background_health_checks:
            results: list[dict[str, Any]] = [pools.health.get(r.deployment) or await pools.check(r) for r in routes]
            return JSONResponse(summary(results))
        return JSONResponse(await pools.check_all(model))

    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
