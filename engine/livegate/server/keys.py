"""LiteLLM's key API: /key/generate, /key/info, /key/update, /key/delete, /key/list, /key/regenerate
(also /key/{key}/regenerate), /key/block, /key/unblock.

Keys are shown once, by /key/generate and /key/regenerate; only their SHA-256 (`token`) is stored. Every
route takes a key or its `token` hash where it names one. All but /key/info (which a key may call about
itself) need the master key. Bodies and queries are checked against schemas/management.schema.json first
(strict.py): a typo is a 400 and nothing is created.

Regenerating, blocking or deleting a key ends its live sessions on this instance at once (other instances
notice within `key_check_seconds`): an `error` event, then close 4010 (regenerated, deleted) or 4003
(blocked).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.gate import REGENERATED, Stop, blocked_stop
from livegate.accounting.keys import KEY_PREFIX, hash_key, new_key, parse_duration
from livegate.accounting.limits import Scope
from livegate.accounting.store import KeyRecord
from livegate.close_codes import KEY_REVOKED
from livegate.server.admin import ApiError, admin, caller, iso, json_body
from livegate.server.strict import NOTHING_DONE, check_body, check_query

if TYPE_CHECKING:
    from livegate.server.app import Gateway

_HASH = re.compile(r"^[0-9a-f]{64}$")
DELETED = Stop(KEY_REVOKED, "invalid_api_key", "The API key was deleted.")


def token_of(value: str) -> str:
    """A key's stored hash, from the key or from the hash itself."""
    return value if _HASH.match(value) else hash_key(value)


def key_info(key: KeyRecord, spend: float | None = None) -> dict[str, Any]:
    """A key's settings with LiteLLM's field names (never the key itself)."""
    return {
        "token": key.token_hash, "key_name": key.key_name, "key_alias": key.key_alias,
        "spend": key.spend if spend is None else spend, "max_budget": key.max_budget, "models": key.models,
        "budget_duration": key.budget_duration, "budget_reset_at": iso(key.budget_reset_at),
        "expires": iso(key.expires), "max_parallel_requests": key.max_parallel_requests,
        "rpm_limit": key.rpm_limit, "max_session_seconds": key.max_session_seconds, "metadata": key.metadata,
        "tags": key.tags, "team_id": key.team_id, "user_id": key.user_id, "blocked": key.blocked,
        "created_at": iso(key.created_at), "updated_at": iso(key.updated_at),
    }


def budget_settings(body: dict[str, Any], now: float) -> dict[str, Any]:
    """The budgeted settings a key, team or user body carries (already schema-checked), as stored: null
    lists and objects become empty, `budget_duration` starts its first period."""
    out: dict[str, Any] = {}
    for name in ("models", "tags", "metadata", "max_budget", "max_parallel_requests", "rpm_limit",
                 "max_session_seconds", "spend", "blocked", "key_alias", "team_alias", "user_alias", "user_email"):
        if name in body:
            value = body[name]
            if value is None and name in ("models", "tags", "metadata"):
                value = {} if name == "metadata" else []
            out[name] = float(value) if name in ("max_budget", "max_session_seconds", "spend") and value is not None \
                else value
    if "budget_duration" in body:
        seconds = _duration(body, "budget_duration")
        out["budget_duration"] = body["budget_duration"]
        out["budget_reset_at"] = now + seconds if seconds else None
    return out


def _duration(body: dict[str, Any], name: str) -> float | None:
    try:
        return parse_duration(body[name], name)
    except ValueError as exc:
        raise ApiError(400, f"{exc}; {NOTHING_DONE}.", "invalid_value", name) from None


def _key_settings(body: dict[str, Any], now: float) -> dict[str, Any]:
    out = budget_settings(body, now)
    for name in ("team_id", "user_id"):
        if name in body:
            out[name] = body[name]
    if "duration" in body:
        seconds = _duration(body, "duration")
        out["expires"] = now + seconds if seconds else None
    return out


async def check_owners(gateway: Gateway, settings: dict[str, Any], now: float) -> None:
    """The team and user a body names exist (a typo must not make a key without the limits meant for it)."""
    store = gateway.accounting.store
    for name, get, create in (("team_id", store.get_team, "/team/new"), ("user_id", store.get_user, "/user/new")):
        if settings.get(name) and await get(settings[name], now) is None:
            what = name.split("_")[0]
            raise ApiError(400, f"{name}: no {what} '{settings[name]}' (create it with {create}); {NOTHING_DONE}.",
                           "invalid_value", name)


def _custom_key(gateway: Gateway, value: Any, param: str) -> str:
    if not isinstance(value, str) or not value.startswith(KEY_PREFIX) or len(value) < 20:
        raise ApiError(400, f"{param}: a custom key must start with {KEY_PREFIX!r} and be at least 20 characters; "
                            f"{NOTHING_DONE}.", "invalid_value", param)
    if value == gateway.config.master_key:
        raise ApiError(400, f"{param}: must differ from the master key; {NOTHING_DONE}.", "invalid_value", param)
    return value


def guarded(handler: Any) -> Any:
    """An endpoint answering ApiError and store outages with livegate's error body."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable:
            return ApiError(503, "The key store is unavailable; try again shortly.", "store_unavailable").response()
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


def add_key_routes(app: FastAPI, gateway: Gateway) -> None:
    def store() -> Any:
        return gateway.accounting.store

    async def generate(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /key/generate", await json_body(request))
        now = time.time()
        settings = _key_settings(body, now)
        await check_owners(gateway, settings, now)
        key = _custom_key(gateway, body["key"], "key") if body.get("key") else new_key()
        record = KeyRecord(token_hash=hash_key(key), key_name=f"{key[:3]}...{key[-4:]}", created_at=now,
                           updated_at=now)
        for name, value in settings.items():
            setattr(record, name, value)
        if await store().get_key(record.token_hash) is not None:
            raise ApiError(400, f"key: this key already exists; {NOTHING_DONE}.", "invalid_value", "key")
        await store().create_key(record)
        return {"key": key, **key_info(record)}

    async def info(request: Request) -> dict[str, Any]:
        who = await caller(gateway, request)
        asked = check_query("GET /key/info", request.query_params).get("key")
        if who.kind == "key" and who.key is not None:
            if asked and token_of(asked) != who.token_hash:
                raise ApiError(403, "A key may only read its own info.", "forbidden")
            token = who.token_hash
        else:
            if gateway.config.master_key and who.kind != "master":
                raise ApiError(403, "Only the master key may do this.", "forbidden")
            if not asked:
                raise ApiError(400, "key: required", "missing_required_parameter", "key")
            token = token_of(asked)
        record = await store().get_key(token)
        if record is None or record.deleted_at is not None:
            raise ApiError(404, "Key not found.", "key_not_found", "key")
        spend = record.spend + gateway.accounting.writer.unflushed_spend(token)
        return {"key": asked or token, "info": key_info(record, spend)}

    async def update(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /key/update", await json_body(request))
        now = time.time()
        changes = _key_settings(body, now)
        await check_owners(gateway, changes, now)
        token = token_of(body["key"])
        record = await store().update_key(token, changes, now)
        if record is None:
            raise ApiError(404, "Key not found.", "key_not_found", "key")
        if record.blocked:
            gateway.accounting.end_sessions(lambda g: g.principal.token_hash == token,
                                            blocked_stop(Scope("key", token, record)))
        return {"key": body["key"], **key_info(record)}

    async def delete(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = check_body("POST /key/delete", await json_body(request))
        keys, aliases = body.get("keys") or [], body.get("key_aliases") or []
        if not keys and not aliases:
            raise ApiError(400, f"keys: required (or key_aliases); {NOTHING_DONE}.", "missing_required_parameter",
                           "keys")
        by_token = {token_of(k): k for k in keys}
        found = await store().get_keys(list(by_token))
        missing = [k for t, k in by_token.items() if t not in found or found[t].deleted_at is not None]
        if missing:  # all or nothing, as everywhere in the management API
            raise ApiError(404, f"Keys not found: {len(missing)} of {len(by_token)}; {NOTHING_DONE}.",
                           "key_not_found", "keys")
        for alias in aliases:
            for record in await store().list_keys(alias):
                by_token.setdefault(record.token_hash, alias)
        deleted = await store().delete_keys(list(by_token), time.time())
        gone = set(deleted)
        gateway.accounting.end_sessions(lambda g: g.principal.token_hash in gone, DELETED)
        return {"deleted_keys": [by_token[t] for t in deleted]}

    async def list_keys(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        query = check_query("GET /key/list", request.query_params)
        page, size = query.get("page", 1), query.get("size", 10)
        records = await store().list_keys(query.get("key_alias"), team_id=query.get("team_id"),
                                          user_id=query.get("user_id"))
        chunk = records[(page - 1) * size: page * size]
        full = query.get("return_full_object", False)
        return {"keys": [key_info(r) if full else r.token_hash for r in chunk], "total_count": len(records),
                "current_page": page, "total_pages": max(1, -(-len(records) // size))}

    async def regenerate(request: Request) -> dict[str, Any]:
        """A new secret for a key: same settings (plus any given here), spend and history; the old secret is
        refused at once, also by its live sessions."""
        await admin(gateway, request)
        body = check_body("POST /key/regenerate", await json_body(request))
        named = request.path_params.get("key") or body.get("key")
        if not named:
            raise ApiError(400, f"key: required; {NOTHING_DONE}.", "missing_required_parameter", "key")
        now = time.time()
        changes = _key_settings(body, now)
        await check_owners(gateway, changes, now)
        fresh = _custom_key(gateway, body["new_key"], "new_key") if body.get("new_key") else new_key()
        if await store().get_key(hash_key(fresh)) is not None:
            raise ApiError(400, f"new_key: this key already exists; {NOTHING_DONE}.", "invalid_value", "new_key")
        old = token_of(named)
        record = await store().regenerate_key(old, hash_key(fresh), f"{fresh[:3]}...{fresh[-4:]}", changes, now)
        if record is None:
            raise ApiError(404, "Key not found.", "key_not_found", "key")
        gateway.accounting.end_sessions(lambda g: g.principal.token_hash == old, REGENERATED)
        return {"key": fresh, **key_info(record)}

    def blocking(blocked: bool) -> Any:
        endpoint = "POST /key/block" if blocked else "POST /key/unblock"

        async def handler(request: Request) -> dict[str, Any]:
            await admin(gateway, request)
            body = check_body(endpoint, await json_body(request))
            token = token_of(body["key"])
            record = await store().update_key(token, {"blocked": blocked}, time.time())
            if record is None:
                raise ApiError(404, "Key not found.", "key_not_found", "key")
            if blocked:
                gateway.accounting.end_sessions(lambda g: g.principal.token_hash == token,
                                                blocked_stop(Scope("key", token, record)))
            return {"key": body["key"], **key_info(record)}

        return handler

    for path, handler, method in (("/key/generate", generate, "POST"), ("/key/info", info, "GET"),
                                  ("/key/update", update, "POST"), ("/key/delete", delete, "POST"),
                                  ("/key/list", list_keys, "GET"), ("/key/regenerate", regenerate, "POST"),
                                  ("/key/{key}/regenerate", regenerate, "POST"),
                                  ("/key/block", blocking(True), "POST"), ("/key/unblock", blocking(False), "POST")):
        app.add_api_route(path, guarded(handler), methods=[method], include_in_schema=False)
