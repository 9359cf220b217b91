"""LiteLLM's key API: /key/generate, /key/info, /key/update, /key/delete, /key/list.

Keys are shown once, by /key/generate; only their SHA-256 (`token`) is stored. Every route takes a key or
its `token` hash where it names one. All but /key/info (which a key may call about itself) need the master key.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.keys import KEY_PREFIX, hash_key, new_key, parse_duration
from livegate.accounting.store import KeyRecord
from livegate.server.admin import ApiError, admin, caller, iso, json_body

if TYPE_CHECKING:
    from livegate.server.app import Gateway

_HASH = re.compile(r"^[0-9a-f]{64}$")


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
        "tags": key.tags, "created_at": iso(key.created_at), "updated_at": iso(key.updated_at),
    }


def _is_a(value: Any, kind: type | tuple[type, ...]) -> bool:
    return not isinstance(value, bool) and isinstance(value, kind)  # JSON true is not a number


def _settings(body: dict[str, Any], now: float) -> dict[str, Any]:
    """The key settings in a generate/update body, validated; `duration` and `budget_duration` resolved."""
    out: dict[str, Any] = {}
    checks: dict[str, tuple[type | tuple[type, ...], str]] = {
        "key_alias": (str, "a string"), "models": (list, "a list of model names"),
        "metadata": (dict, "an object"), "tags": (list, "a list of strings"),
        "max_budget": ((int, float), "a number (USD)"), "max_parallel_requests": (int, "an integer"),
        "rpm_limit": (int, "an integer"), "max_session_seconds": ((int, float), "a number of seconds"),
    }
    for name, (kind, what) in checks.items():
        if name not in body:
            continue
        value: Any = body[name]
        if value is None:
            out[name] = [] if name in ("models", "tags") else ({} if name == "metadata" else None)
            continue
        if not _is_a(value, kind):
            raise ApiError(400, f"{name}: expected {what}", "invalid_value", name)
        if name in ("models", "tags") and not all(isinstance(v, str) for v in value):
            raise ApiError(400, f"{name}: expected a list of strings", "invalid_value", name)
        if name in ("max_budget", "max_session_seconds") and value < 0:
            raise ApiError(400, f"{name}: must not be negative", "invalid_value", name)
        if name in ("max_parallel_requests", "rpm_limit") and value < 0:
            raise ApiError(400, f"{name}: must not be negative", "invalid_value", name)
        out[name] = float(value) if name in ("max_budget", "max_session_seconds") else value
    for name, target in (("duration", "expires"), ("budget_duration", "budget_reset_at")):
        if name in body:
            try:
                seconds = parse_duration(body[name], name)
            except ValueError as exc:
                raise ApiError(400, str(exc), "invalid_value", name) from None
            out[target] = now + seconds if seconds else None
            if name == "budget_duration":
                out["budget_duration"] = body[name]
    if "spend" in body:
        if isinstance(body["spend"], bool) or not isinstance(body["spend"], int | float) or body["spend"] < 0:
            raise ApiError(400, "spend: expected a non-negative number", "invalid_value", "spend")
        out["spend"] = float(body["spend"])
    return out


def add_key_routes(app: FastAPI, gateway: Gateway) -> None:
    def store() -> Any:
        return gateway.accounting.store

    async def guarded(handler: Any, request: Request) -> JSONResponse:
        try:
            return JSONResponse(await handler(request))
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable:
            return ApiError(503, "The key store is unavailable; try again shortly.", "store_unavailable").response()

    async def generate(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = await json_body(request)
        now = time.time()
        settings = _settings(body, now)
        key = body.get("key") or new_key()
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) < 20:
            raise ApiError(400, f"key: a custom key must start with {KEY_PREFIX!r} and be at least 20 characters",
                           "invalid_value", "key")
        if key == gateway.config.master_key:
            raise ApiError(400, "key: must differ from the master key", "invalid_value", "key")
        record = KeyRecord(token_hash=hash_key(key), key_name=f"{key[:3]}...{key[-4:]}", created_at=now,
                           updated_at=now)
        for name, value in settings.items():
            setattr(record, name, value)
        if await store().get_key(record.token_hash) is not None:
            raise ApiError(400, "key: this key already exists", "invalid_value", "key")
        await store().create_key(record)
        return {"key": key, **key_info(record)}

    async def info(request: Request) -> dict[str, Any]:
        who = await caller(gateway, request)
        asked = request.query_params.get("key")
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
        body = await json_body(request)
        if not isinstance(body.get("key"), str) or not body["key"]:
            raise ApiError(400, "key: required", "missing_required_parameter", "key")
        changes = _settings(body, time.time())
        record = await store().update_key(token_of(body["key"]), changes, time.time())
        if record is None:
            raise ApiError(404, "Key not found.", "key_not_found", "key")
        return {"key": body["key"], **key_info(record)}

    async def delete(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        body = await json_body(request)
        keys, aliases = body.get("keys") or [], body.get("key_aliases") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ApiError(400, "keys: expected a list of keys", "invalid_value", "keys")
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ApiError(400, "key_aliases: expected a list of strings", "invalid_value", "key_aliases")
        if not keys and not aliases:
            raise ApiError(400, "keys: required", "missing_required_parameter", "keys")
        by_token = {token_of(k): k for k in keys}
        for alias in aliases:
            for record in await store().list_keys(alias):
                by_token.setdefault(record.token_hash, alias)
        deleted = await store().delete_keys(list(by_token), time.time())
        if len(deleted) < len(by_token):
            missing = [by_token[t] for t in by_token if t not in deleted]
            raise ApiError(404, f"Keys not found: {len(missing)} of {len(by_token)}.", "key_not_found", "keys")
        return {"deleted_keys": [by_token[t] for t in deleted]}

    async def list_keys(request: Request) -> dict[str, Any]:
        await admin(gateway, request)
        query = request.query_params
        try:
            page, size = int(query.get("page", 1)), int(query.get("size", 10))
        except ValueError:
            raise ApiError(400, "page, size: expected integers", "invalid_value") from None
        if page < 1 or not 1 <= size <= 100:
            raise ApiError(400, "page >= 1 and 1 <= size <= 100", "invalid_value")
        records = await store().list_keys(query.get("key_alias"))
        chunk = records[(page - 1) * size: page * size]
        full = query.get("return_full_object", "").lower() == "true"
        return {"keys": [key_info(r) if full else r.token_hash for r in chunk], "total_count": len(records),
                "current_page": page, "total_pages": max(1, -(-len(records) // size))}

    for path, handler, method in (("/key/generate", generate, "POST"), ("/key/info", info, "GET"),
                                  ("/key/update", update, "POST"), ("/key/delete", delete, "POST"),
                                  ("/key/list", list_keys, "GET")):
        app.add_api_route(path, _endpoint(guarded, handler), methods=[method], include_in_schema=False)


def _endpoint(guarded: Any, handler: Any) -> Any:
    async def endpoint(request: Request) -> JSONResponse:
        return await guarded(handler, request)

    return endpoint
