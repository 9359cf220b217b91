"""LiteLLM's user API: /user/new, /user/info, /user/update, /user/delete, /user/list (master key only;
strict bodies and queries).

A user owns keys and has its own models, budget (`max_budget`, `budget_duration`), limits and spend; its
keys fall under them as well as their own and their team's. `/user/new` makes a key owned by the user and
returns it (`auto_create_key`, true by default, as LiteLLM does) and may add the user to `teams`.
Deleting a user deletes its keys.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from livegate.accounting.keys import hash_key, new_key
from livegate.accounting.owners import UserRecord
from livegate.accounting.store import KeyRecord
from livegate.server.admin import ApiError, admin, iso, json_body
from livegate.server.keys import DELETED, budget_settings, guarded, key_info
from livegate.server.strict import NOTHING_DONE, check_body, check_query

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def user_info(gateway: Gateway, user: UserRecord) -> dict[str, Any]:
    spend = user.spend + gateway.accounting.writer.unflushed_spend(f"user:{user.user_id}")
    return {
        "user_id": user.user_id, "user_alias": user.user_alias, "user_email": user.user_email,
        "models": user.models, "max_budget": user.max_budget, "spend": spend,
        "budget_duration": user.budget_duration, "budget_reset_at": iso(user.budget_reset_at),
        "max_parallel_requests": user.max_parallel_requests, "rpm_limit": user.rpm_limit,
        "max_session_seconds": user.max_session_seconds, "metadata": user.metadata,
        "created_at": iso(user.created_at), "updated_at": iso(user.updated_at),
    }


def add_user_routes(app: FastAPI, gateway: Gateway) -> None:
    def store() -> Any:
        return gateway.accounting.store

    async def new(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /user/new", await json_body(request))
        now = time.time()
        user = UserRecord(user_id=body.get("user_id") or str(uuid.uuid4()), created_at=now, updated_at=now)
        for name, value in budget_settings({k: v for k, v in body.items() if k != "key_alias"}, now).items():
            setattr(user, name, value)
        teams = [(t, "user") if isinstance(t, str) else (t["team_id"], t.get("user_role", "user"))
                 for t in body.get("teams") or []]
        found = await store().get_teams([t for t, _ in teams], now)
        missing = [t for t, _ in teams if t not in found]
        if missing:
            raise ApiError(400, f"teams: no team '{missing[0]}' (create it with /team/new); {NOTHING_DONE}.",
                           "invalid_value", "teams")
        if await store().get_user(user.user_id, now) is not None:
            raise ApiError(400, f"user_id: user '{user.user_id}' already exists; {NOTHING_DONE}.", "invalid_value",
                           "user_id")
        await store().create_user(user, teams, now)
        out = user_info(gateway, user)
        if body.get("auto_create_key", True):
            key = new_key()
            record = KeyRecord(token_hash=hash_key(key), key_name=f"{key[:3]}...{key[-4:]}",
                               key_alias=body.get("key_alias"), user_id=user.user_id, created_at=now, updated_at=now)
            await store().create_key(record)
            out.update({"key": key, "token": record.token_hash, "key_alias": record.key_alias})
        return out

    async def info(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        user_id = check_query("GET /user/info", request.query_params)["user_id"]
        user = await store().get_user(user_id, time.time())
        if user is None:
            raise ApiError(404, f"User '{user_id}' not found.", "user_not_found", "user_id")
        keys = await store().list_keys(user_id=user_id)
        teams = [{"team_id": m.team_id, "role": m.role} for m in await store().memberships(user_id)]
        return {"user_id": user_id, "user_info": user_info(gateway, user), "keys": [key_info(k) for k in keys],
                "teams": teams}

    async def update(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /user/update", await json_body(request))
        now = time.time()
        user = await store().update_user(body["user_id"], budget_settings(body, now), now)
        if user is None:
            raise ApiError(404, f"User '{body['user_id']}' not found.", "user_not_found", "user_id")
        return user_info(gateway, user)

    async def delete(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /user/delete", await json_body(request))
        found = await store().get_users(body["user_ids"], time.time())
        missing = [u for u in body["user_ids"] if u not in found]
        if missing:
            raise ApiError(404, f"User '{missing[0]}' not found; {NOTHING_DONE}.", "user_not_found", "user_ids")
        users, keys = await store().delete_users(body["user_ids"], time.time())
        gone = set(keys)
        gateway.accounting.end_sessions(lambda g: g.principal.token_hash in gone, DELETED)
        return {"deleted_users": users, "deleted_keys": len(keys)}

    async def list_users(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        query = check_query("GET /user/list", request.query_params)
        page, size = query.get("page", 1), query.get("page_size", 25)
        users = await store().list_users(time.time())
        return {"users": [user_info(gateway, u) for u in users[(page - 1) * size: page * size]],
                "total": len(users), "page": page, "page_size": size,
                "total_pages": max(1, -(-len(users) // size))}

    for path, handler, method in (("/user/new", new, "POST"), ("/user/info", info, "GET"),
                                  ("/user/update", update, "POST"), ("/user/delete", delete, "POST"),
                                  ("/user/list", list_users, "GET")):
        app.add_api_route(path, guarded(handler), methods=[method], include_in_schema=False)
