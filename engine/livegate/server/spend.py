"""GET /spend/logs: one row per realtime session, passthrough session and REST call, with LiteLLM's field
names plus livegate's tokens by modality. Filters: api_key (a key or its hash), start_date, end_date
(YYYY-MM-DD, inclusive, or ISO 8601), model, team_id, user_id, status. The master key sees every row; a
virtual key its own. The query is strict (schemas/management.schema.json).

GET /spend/logs/{session}: one row, by its request id or the OpenAI session id (sess_...), with the session's
`transcript` (redacted; null unless
general_settings.store_prompts_in_spend_logs was on for it). The same rule: a virtual key reads only its own
(another key's session is a 404, as an unknown one is).

Both first write the rows the background writer still holds, so a session that ended on this instance is in
the answer at once (a session is written when it ends: one still open has no row yet)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.store import SPEND_TOKEN_COLUMNS
from livegate.server.admin import ApiError, caller, iso, parse_time
from livegate.server.keys import token_of
from livegate.server.strict import check_query

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def spend_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": row["request_id"], "api_key": row["api_key"], "key_alias": row["key_alias"],
        "model": row["model"], "upstream_model": row["upstream_model"], "call_type": row["call_type"],
        "route": row["route"], "spend": row["spend"], "total_tokens": row["total_tokens"],
        "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
        "startTime": iso(row["start_time"]), "endTime": iso(row["end_time"]), "status": row["status"],
        "close_code": row["close_code"], "request_tags": json.loads(row["request_tags"] or "[]"),
        "end_user": row["end_user"], "metadata": json.loads(row["metadata"] or "{}"),
        "team_id": row.get("team_id"), "user": row.get("user_id"), "session_id": row.get("session_id"),
        **{f"{name}_tokens": row[f"{name}_tokens"] for name in SPEND_TOKEN_COLUMNS},
    }


def add_spend_routes(app: FastAPI, gateway: Gateway) -> None:
    async def logs(request: Request) -> JSONResponse:
        try:
            who = await caller(gateway, request)
            query = check_query("GET /spend/logs", request.query_params)
            api_key = token_of(query["api_key"]) if query.get("api_key") else None
            if who.kind == "key":
                if api_key not in (None, who.token_hash):
                    raise ApiError(403, "A key may only read its own spend.", "forbidden", "api_key")
                api_key = who.token_hash
            elif gateway.config.master_key and who.kind != "master":
                raise ApiError(403, "Only the master key may do this.", "forbidden")
            start = parse_time(query["start_date"], "start_date") if query.get("start_date") else None
            end = parse_time(query["end_date"], "end_date", end_of_day=True) if query.get("end_date") else None
            # the background writer writes every half second: the rows it holds (a session that just ended) first
            await gateway.accounting.writer.flush()
            rows = await gateway.accounting.store.spend_logs(api_key, start, end, query.get("model") or None,
                                                             team_id=query.get("team_id"),
                                                             user_id=query.get("user_id"), status=query.get("status"))
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable:
            return ApiError(503, "The spend store is unavailable; try again shortly.", "store_unavailable").response()
        return JSONResponse([spend_row(r) for r in rows])

    async def one(request: Request, request_id: str) -> JSONResponse:
        try:
            who = await caller(gateway, request)
            if who.kind != "key" and gateway.config.master_key and who.kind != "master":
                raise ApiError(403, "Only the master key may do this.", "forbidden")
            if request.query_params:
                name = next(iter(request.query_params))
                raise ApiError(400, f"Unknown query parameter '{name[:64]}': this route takes none.",
                               "invalid_parameter", name[:64])
            await gateway.accounting.writer.flush()
            found = await gateway.accounting.store.spend_log(request_id)
            if found is None or (who.kind == "key" and found[0]["api_key"] != who.token_hash):
                raise ApiError(404, f"No spend log '{request_id[:64]}'.", "not_found", "request_id")
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable:
            return ApiError(503, "The spend store is unavailable; try again shortly.", "store_unavailable").response()
        row, transcript = found
        return JSONResponse({**spend_row(row), "transcript": json.loads(transcript) if transcript else None})

    app.add_api_route("/spend/logs", logs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/spend/logs/{request_id}", one, methods=["GET"], include_in_schema=False)
