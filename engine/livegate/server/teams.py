"""LiteLLM's team API: /team/new, /team/info, /team/update, /team/delete, /team/list, /team/member_add,
/team/member_delete, /team/block, /team/unblock (master key only; strict bodies and queries).

A team has its own models, budget (`max_budget`, `budget_duration`), limits (`rpm_limit`,
`max_parallel_requests`, `max_session_seconds`) and spend; its keys fall under all of them as well as their
own. Members (`members_with_roles`: users with a role, admin or user) are recorded for the operator: the
master key is livegate's only administrator. Deleting a team deletes its keys; blocking it ends the live
sessions of its keys (close 4003) and refuses new ones until it is unblocked.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from livegate.accounting.gate import blocked_stop
from livegate.accounting.limits import Scope
from livegate.accounting.owners import TeamRecord
from livegate.server.admin import ApiError, admin, iso, json_body
from livegate.server.keys import DELETED, budget_settings, guarded, key_info
from livegate.server.strict import NOTHING_DONE, check_body, check_query

if TYPE_CHECKING:
    from livegate.server.app import Gateway


def team_info(gateway: Gateway, team: TeamRecord, members: list[Any]) -> dict[str, Any]:
    spend = team.spend + gateway.accounting.writer.unflushed_spend(f"team:{team.team_id}")
    return {
        "team_id": team.team_id, "team_alias": team.team_alias, "models": team.models,
        "max_budget": team.max_budget, "spend": spend, "budget_duration": team.budget_duration,
        "budget_reset_at": iso(team.budget_reset_at), "max_parallel_requests": team.max_parallel_requests,
        "rpm_limit": team.rpm_limit, "max_session_seconds": team.max_session_seconds, "metadata": team.metadata,
        "tags": team.tags, "blocked": team.blocked,
        "members_with_roles": [{"user_id": m.user_id, "role": m.role} for m in members],
        "created_at": iso(team.created_at), "updated_at": iso(team.updated_at),
    }


async def existing_users(gateway: Gateway, user_ids: list[str], param: str) -> None:
    found = await gateway.accounting.store.get_users(user_ids, time.time())
    missing = [u for u in user_ids if u not in found]
    if missing:
        raise ApiError(400, f"{param}: no user '{missing[0]}' (create it with /user/new); {NOTHING_DONE}.",
                       "invalid_value", param)


def add_team_routes(app: FastAPI, gateway: Gateway) -> None:
    async def load(team_id: str) -> TeamRecord:
        team = await gateway.accounting.store.get_team(team_id, time.time())
        if team is None:
            raise ApiError(404, f"Team '{team_id}' not found.", "team_not_found", "team_id")
        return team

    async def shown(team: TeamRecord) -> dict[str, Any]:
        return team_info(gateway, team, await gateway.accounting.store.members(team.team_id))

    def end_team_sessions(team: TeamRecord) -> None:
        if team.blocked:
            gateway.accounting.end_sessions(
                lambda g: g.principal.key is not None and g.principal.key.team_id == team.team_id,
                blocked_stop(Scope("team", team.team_id, team)))

    async def new(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /team/new", await json_body(request))
        now = time.time()
        team = TeamRecord(team_id=body.get("team_id") or str(uuid.uuid4()), created_at=now, updated_at=now)
        for name, value in budget_settings(body, now).items():
            setattr(team, name, value)
        members = [(m["user_id"], m.get("role", "user")) for m in body.get("members_with_roles") or []]
        await existing_users(gateway, [u for u, _ in members], "members_with_roles")
        if await gateway.accounting.store.get_team(team.team_id, now) is not None:
            raise ApiError(400, f"team_id: team '{team.team_id}' already exists; {NOTHING_DONE}.", "invalid_value",
                           "team_id")
        await gateway.accounting.store.create_team(team, members, now)
        return await shown(team)

    async def info(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        team = await load(check_query("GET /team/info", request.query_params)["team_id"])
        keys = await gateway.accounting.store.list_keys(team_id=team.team_id)
        return {"team_id": team.team_id, "team_info": await shown(team), "keys": [key_info(k) for k in keys]}

    async def update(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /team/update", await json_body(request))
        now = time.time()
        changes = budget_settings(body, now)
        team = await gateway.accounting.store.update_team(body["team_id"], changes, now)
        if team is None:
            raise ApiError(404, f"Team '{body['team_id']}' not found.", "team_not_found", "team_id")
        end_team_sessions(team)
        return await shown(team)

    async def delete(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /team/delete", await json_body(request))
        found = await gateway.accounting.store.get_teams(body["team_ids"], time.time())
        missing = [t for t in body["team_ids"] if t not in found]
        if missing:
            raise ApiError(404, f"Team '{missing[0]}' not found; {NOTHING_DONE}.", "team_not_found", "team_ids")
        teams, keys = await gateway.accounting.store.delete_teams(body["team_ids"], time.time())
        gone = set(keys)
        gateway.accounting.end_sessions(lambda g: g.principal.token_hash in gone, DELETED)
        return {"deleted_teams": teams, "deleted_keys": len(keys)}

    async def list_teams(request: Request) -> list[dict[str, Any]]:
        await admin(gateway, request)
        query = check_query("GET /team/list", request.query_params)
        teams = await gateway.accounting.store.list_teams(time.time(), query.get("user_id"))
        return [await shown(team) for team in teams]

    async def member_add(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /team/member_add", await json_body(request))
        team = await load(body["team_id"])
        given = body["member"] if isinstance(body["member"], list) else [body["member"]]
        members = [(m["user_id"], m.get("role", "user")) for m in given]
        await existing_users(gateway, [u for u, _ in members], "member")
        await gateway.accounting.store.add_members(team.team_id, members, time.time())
        return await shown(team)

    async def member_delete(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /team/member_delete", await json_body(request))
        team = await load(body["team_id"])
        if not await gateway.accounting.store.remove_members(team.team_id, [body["user_id"]]):
            raise ApiError(404, f"User '{body['user_id']}' is not a member of team '{team.team_id}'.",
                           "member_not_found", "user_id")
        return await shown(team)

    def blocking(blocked: bool) -> Any:
        endpoint = "POST /team/block" if blocked else "POST /team/unblock"

        async def handler(request: Request) -> dict[str, Any]:
            await admin(gateway, request)
            body = check_body(endpoint, await json_body(request))
            team = await gateway.accounting.store.update_team(body["team_id"], {"blocked": blocked}, time.time())
            if team is None:
                raise ApiError(404, f"Team '{body['team_id']}' not found.", "team_not_found", "team_id")
            end_team_sessions(team)
            return await shown(team)

        return handler

    for path, handler, method in (("/team/new", new, "POST"), ("/team/info", info, "GET"),
                                  ("/team/update", update, "POST"), ("/team/delete", delete, "POST"),
                                  ("/team/list", list_teams, "GET"), ("/team/member_add", member_add, "POST"),
                                  ("/team/member_delete", member_delete, "POST"),
                                  ("/team/block", blocking(True), "POST"), ("/team/unblock", blocking(False), "POST")):
        app.add_api_route(path, guarded(handler), methods=[method], include_in_schema=False)
