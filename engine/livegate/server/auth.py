"""livegate keys: where clients put them, and how they are checked. Keys never reach a log."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from livegate.accounting.gate import Grant, Principal, Refusal
from livegate.config import Config, ModelRoute
from livegate.takeover.service import DRAINING

if TYPE_CHECKING:
    from livegate.server.app import Gateway

INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."  # browsers cannot set headers on a WebSocket
BETA_PROTOCOL = "openai-beta.realtime-v1"


def client_key(headers: Mapping[str, str], subprotocols: Sequence[str] = ()) -> str | None:
    """The livegate key a client sent: `Authorization: Bearer`, `api-key`, `x-goog-api-key`,
    `x-litellm-api-key` / `x-livegate-api-key`, or the `openai-insecure-api-key.KEY` subprotocol."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    for name in ("api-key", "x-livegate-api-key", "x-litellm-api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value.removeprefix("Bearer ").strip()
    for protocol in subprotocols:
        if protocol.startswith(INSECURE_KEY_PROTOCOL):
            return protocol[len(INSECURE_KEY_PROTOCOL) :] or None
    return None


def key_is_valid(config: Config, key: str | None) -> bool:
    """No master key configured means an open gateway (the server warns at startup)."""
    if not config.master_key:
        return True
    return key is not None and hmac.compare_digest(key.encode(), config.master_key.encode())


def refusal(config: Config, key: str | None) -> tuple[int, str] | None:
    """(HTTP status, reason) when the key does not open this gateway, else None."""
    if key_is_valid(config, key):
        return None
    if key is None:
        return 401, "Missing API key: send `Authorization: Bearer <key>`."
    return 401, "Invalid API key."


# --- virtual keys, client secrets and limits (engine/livegate/accounting) ---------------------------------------------


async def principal(gateway: Gateway, key: str | None, route: str | None = None, *,
                    realtime: bool = False) -> Principal | Refusal:
    """Who a key is: the master key, a virtual key (maybe through a client secret), or anyone on an open
    gateway. A Refusal (401, 403, 503) otherwise, kept among the recent errors of `route` when one is named.
    Client secrets are refused unless `realtime`: only the routes that open realtime sessions for a browser
    (/v1/realtime, WebRTC) pass it."""
    who = await gateway.accounting.principal(key, realtime=realtime)
    if isinstance(who, Refusal) and route is not None:
        gateway.accounting.record_refusal(route, None, key, who)
    return who


async def admit(gateway: Gateway, who: Principal, *, route: str, model_route: ModelRoute | None = None,
                model: str | None = None, upstream_model: str | None = None, headers: Mapping[str, str] | None = None,
                session: bool = True) -> Grant | Refusal:
    """Admit a session (or a REST call): model allowed, budget left, rpm and parallel-session limits. A
    draining gateway admits no new session (REST calls are short: they are still served)."""
    if session and gateway.takeover.draining:
        gateway.accounting.metrics.refusals.labels(route, DRAINING.code).inc()
        return DRAINING
    return await gateway.accounting.admit(
        who, route=route, model=model, upstream_model=upstream_model or (model_route.model_id if model_route else None),
        model_info=model_route.model_info if model_route else None, headers=headers, session=session,
        max_session_seconds=model_route.max_session_seconds if model_route else None)
