"""POST /v1/realtime/client_secrets, in OpenAI's shape: a short-lived secret a browser may use instead of
a key, as `Authorization: Bearer` or the `openai-insecure-api-key.<secret>` subprotocol.

    {"expires_after": {"anchor": "created_at", "seconds": 10..7200 (default 600)}, "session": {...}}
    -> {"value": "ek_...", "expires_at": UNIX seconds, "session": {...}}

Minting needs a valid key. A secret opens realtime sessions until it expires (sessions already open go on,
as with OpenAI), only for the model it was minted for (`session.model`) or else the models its parent key
may use, never outliving the parent; its spend counts against the parent key. Its `session` is applied to
every session it opens (as a first session.update). Every other route refuses it (Accounting.principal).

Limits: `client_secret_mints_per_minute` per key, counted in the store so a fleet shares it (429 with
Retry-After), and `client_secret_max_session_bytes` for the `session` (413; the body is not read past the
limit). Expired secrets are purged by the accounting poller (gate.py, SECRET_PURGE_AFTER).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from livegate.accounting.database import StoreUnavailable
from livegate.accounting.keys import hash_key, new_client_secret
from livegate.accounting.store import SecretRecord
from livegate.server.admin import ApiError, caller

if TYPE_CHECKING:
    from livegate.server.app import Gateway

DEFAULT_SECONDS = 600
MIN_SECONDS, MAX_SECONDS = 10, 7200
ENVELOPE_BYTES = 4096  # the body around `session` (expires_after, whitespace)


def add_client_secret_routes(app: FastAPI, gateway: Gateway) -> None:
    async def create(request: Request) -> JSONResponse:
        try:
            return JSONResponse(await _create(gateway, request))
        except _RateLimited as exc:
            response = exc.response()
            response.headers["retry-after"] = str(exc.retry_after)
            return response
        except ApiError as exc:
            return exc.response()
        except StoreUnavailable:
            return ApiError(503, "The key store is unavailable; try again shortly.", "store_unavailable").response()

    app.add_api_route("/v1/realtime/client_secrets", create, methods=["POST"], include_in_schema=False)


async def _create(gateway: Gateway, request: Request) -> dict[str, Any]:
    who = await caller(gateway, request)
    if who.secret is not None:
        raise ApiError(403, "A client secret cannot mint client secrets.", "forbidden")
    await _count_mint(gateway, who.token_hash or who.kind)
    body = await _body(request, gateway.config.client_secret_max_session_bytes)
    expires_after = body.get("expires_after") or {}
    if not isinstance(expires_after, dict):
        raise ApiError(400, "expires_after: expected an object", "invalid_type", "expires_after")
    if expires_after.get("anchor", "created_at") != "created_at":
        raise ApiError(400, "expires_after.anchor: expected 'created_at'", "invalid_value", "expires_after.anchor")
    seconds = expires_after.get("seconds", DEFAULT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ApiError(400, f"expires_after.seconds: expected an integer from {MIN_SECONDS} to {MAX_SECONDS}",
                       "invalid_value", "expires_after.seconds")
    session = body.get("session")
    if session is not None and not isinstance(session, dict):
        raise ApiError(400, "session: expected an object", "invalid_type", "session")
    session = {"type": "realtime", **(session or {})}
    limit = gateway.config.client_secret_max_session_bytes
    if len(json.dumps(session, separators=(",", ":")).encode()) > limit:
        raise ApiError(413, f"session: over {limit} bytes as JSON (client_secret_max_session_bytes)",
                       "request_too_large", "session")
    model = session.get("model")
    if model is not None:
        if not isinstance(model, str) or gateway.config.route(model) is None:
            raise ApiError(400, f"session.model: the model '{model}' does not exist on this gateway",
                           "model_not_found", "session.model")
        if not who.allows(model, gateway.config.route(model).model_id):  # type: ignore[union-attr]
            raise ApiError(403, f"This key is not allowed to use the model '{model}'.", "model_not_allowed",
                           "session.model")
    now = time.time()
    expires_at = int(now + seconds)  # whole seconds, as OpenAI reports it: the secret dies at this exact time
    if who.key is not None and who.key.expires is not None:
        expires_at = min(expires_at, int(who.key.expires))
    value = new_client_secret()
    await gateway.accounting.store.create_secret(SecretRecord(
        secret_hash=hash_key(value), token_hash=who.token_hash or None, expires_at=expires_at, session=session,
        created_at=now))
    return {"value": value, "expires_at": expires_at, "session": session}


class _RateLimited(ApiError):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(429, f"Rate limit exceeded: at most {limit} client secrets a minute for this key "
                              "(client_secret_mints_per_minute).", "rate_limit_exceeded")
        self.retry_after = retry_after


async def _count_mint(gateway: Gateway, who: str) -> None:
    """Count one mint in the key's current minute (in the store, so instances share the count)."""
    now = time.time()
    limit = gateway.config.client_secret_mints_per_minute
    if await gateway.accounting.store.count_request("client_secret_mint:" + who, now) > limit:
        raise _RateLimited(limit, max(1, 60 - int(now % 60)))


async def _body(request: Request, max_session_bytes: int) -> dict[str, Any]:
    """The JSON object body, read no further than the `session` limit allows."""
    cap = max_session_bytes + ENVELOPE_BYTES
    too_large = ApiError(413, f"The body is over {cap} bytes (client_secret_max_session_bytes + the envelope).",
                         "request_too_large", "session")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise too_large
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > cap:
                raise too_large
    except ClientDisconnect:
        raise ApiError(400, "The client disconnected while sending its body.", "invalid_json") from None
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise ApiError(400, "The body must be a JSON object.", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.", "invalid_json")
    return body
