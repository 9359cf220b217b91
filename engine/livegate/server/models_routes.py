"""Discovery: GET /v1/models and /models in OpenAI's list shape, filtered to what the caller may use, each
model with its capability row (modalities, tools, images...) in the extension field `capabilities`; and
LiteLLM's GET /model/info for the master key (routes, capabilities and prices; never a credential).

A wildcard entry (`model_name: "*"`, `gemini-*`) is listed as its pattern to a caller that may use every
model, and as the names it serves that the caller's `models` list (key, team or user) names otherwise.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from livegate.accounting.gate import Principal
from livegate.accounting.limits import UNRESTRICTED
from livegate.accounting.prices import MODEL_INFO_KEYS
from livegate.config import ModelRoute
from livegate.server.admin import admin, caller
from livegate.server.hygiene import redact
from livegate.server.keys import guarded
from livegate.server.strict import check_query
from livegate.translation.capabilities import shipped_table, short_model_id

if TYPE_CHECKING:
    from livegate.server.app import Gateway

_WILDCARD = "*?["


def _backend(route: ModelRoute) -> str:
    return "vertex" if route.provider == "vertex_ai" else "aistudio"


def capabilities(gateway: Gateway, route: ModelRoute) -> dict[str, Any]:
    table = gateway.mappings.models or shipped_table()
    return table.capabilities(route.model_id, _backend(route), route.model_info)


def _named_models(who: Principal) -> list[str] | None:
    """The model names the caller's lists allow (None: every model)."""
    lists = [s.setting("models") or [] for s in who.limits.scopes]
    restricting = [m for m in lists if m and not UNRESTRICTED.intersection(m)]
    if not restricting:
        return None
    return list(dict.fromkeys(name for models in restricting for name in models))


def visible_models(gateway: Gateway, who: Principal) -> list[tuple[str, ModelRoute]]:
    """(the id a client asks for, its route) for every model the caller may use, in config order."""
    named = _named_models(who)
    out: dict[str, ModelRoute] = {}
    for route in gateway.config.routes:
        if not any(ch in route.model_name for ch in _WILDCARD):
            if who.allows(route.model_name, route.model_id):
                out.setdefault(route.model_name, route)
        elif named is None:
            out.setdefault(route.model_name, route)
        else:
            for name in named:
                if gateway.config.route(name) is route and who.allows(name, route.model_id):
                    out.setdefault(name, route)
    return list(out.items())


def add_model_routes(app: FastAPI, gateway: Gateway) -> None:
    created = int(time.time())

    async def models(request: Request) -> dict[str, Any]:
        check_query("GET /v1/models", request.query_params)
        who = await caller(gateway, request)
        data = [{"id": name, "object": "model", "created": created,
                 "owned_by": "livegate" if route.provider == "simulator" else "google",
                 "capabilities": capabilities(gateway, route)} for name, route in visible_models(gateway, who)]
        return {"object": "list", "data": data}

    async def model_info(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        query = check_query("GET /model/info", request.query_params)
        data = []
        for route in gateway.config.routes:
            if query.get("model") and query["model"] != route.model_name:
                continue
            params: dict[str, Any] = {"model": f"{route.provider}/{route.model_id}"}
            for name in ("api_base", "api_version", "vertex_project", "vertex_location", "max_session_seconds"):
                value = getattr(route, name)
                if value is not None:
                    params[name] = redact(value.split("@")[-1]) if name == "api_base" else value
            price = gateway.accounting.price(short_model_id(route.model_id), route.model_info)
            info: dict[str, Any] = {"capabilities": capabilities(gateway, route),
                                    "price_source": price.source if price else None}
            for theirs, ours in MODEL_INFO_KEYS.items():
                info[theirs] = getattr(price, ours) if price else None
            data.append({"model_name": route.model_name, "litellm_params": params, "model_info": info})
        return {"data": data}

    for path in ("/v1/models", "/models"):
        app.add_api_route(path, guarded(models), methods=["GET"], include_in_schema=False)
    app.add_api_route("/model/info", guarded(model_info), methods=["GET"], include_in_schema=False)
