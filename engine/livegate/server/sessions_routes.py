"""For the admin page (master key only): the live sessions on every instance, ending one, and this
instance's recent errors.

    GET  /session/list       {"data": [{session_id, key_alias, team_id, user_id, model, route, started_at,
                              spend (this instance's sessions), instance}]}
    POST /session/end        {"session_id"}: the session gets an `error` (`session_terminated`) and closes
                             4003; on another instance within its `key_check_seconds` (202 then)
    GET  /errors/recent      ?limit=50: handshake refusals and sessions that ended in failure, newest first
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from livegate.accounting.gate import TERMINATED
from livegate.accounting.keys import label
from livegate.server.admin import ApiError, admin, iso, json_body
from livegate.server.keys import guarded
from livegate.server.strict import check_body, check_query

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def add_session_routes(app: FastAPI, gateway: Gateway) -> None:
    accounting = gateway.accounting

    async def sessions(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        check_query("GET /session/list", request.query_params)
        data: dict[str, dict[str, Any]] = {}
        for grant in sorted(accounting.grants, key=lambda g: -g.started_wall):
            key = grant.principal.key
            cost = grant.cost()
            data[grant.session_id] = {
                "session_id": grant.session_id, "key_alias": grant.principal.label,
                "team_id": key.team_id if key else None, "user_id": key.user_id if key else None,
                "model": grant.model, "route": grant.route, "started_at": iso(grant.started_wall),
                "spend": cost.total if cost else None, "instance": accounting.instance_id}
        for row in await accounting.store.live_sessions(time.time()):
            data.setdefault(row["session_id"], {
                "session_id": row["session_id"], "key_alias": label(row["token_hash"]), "team_id": row["team_id"],
                "user_id": row["user_id"], "model": row["model"], "route": row["route"],
                "started_at": iso(row["started_at"]), "spend": None, "instance": row["instance_id"]})
        return {"data": list(data.values())}

    async def end(request: Request) -> Any:
        await admin(gateway, request)
        session_id = check_body("POST /session/end", await json_body(request))["session_id"]
        if accounting.end_sessions(lambda g: g.session_id == session_id, TERMINATED):
            return {"session_id": session_id, "status": "ended"}
        if await accounting.store.request_stop(session_id):
            return JSONResponse({"session_id": session_id, "status": "stop_requested"}, status_code=202)
        raise ApiError(404, f"No live session '{session_id}'.", "session_not_found", "session_id")

    async def errors(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        limit = check_query("GET /errors/recent", request.query_params).get("limit", 50)
        return {"data": [{**e, "time": iso(e["time"])} for e in accounting.recent_errors.latest(limit)],
                "instance": accounting.instance_id}

    app.add_api_route("/session/list", guarded(sessions), methods=["GET"], include_in_schema=False)
    app.add_api_route("/session/end", guarded(end), methods=["POST"], include_in_schema=False)
    app.add_api_route("/errors/recent", guarded(errors), methods=["GET"], include_in_schema=False)
