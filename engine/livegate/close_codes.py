"""Every WebSocket close code livegate sends, what it means, and the one way to refuse a connection.

`TABLE` is the reference (docs render it): each entry names the code, where it is used and why. The
constants below are what the code uses; nothing else in livegate spells a close code as a number.

Refusals happen at the handshake, before any upstream connection, and say why in a way each client can
show (`refuse`):
- OpenAI Realtime clients (`/v1/realtime`): SDKs show an HTTP refusal only as its status, so livegate
  accepts the WebSocket, sends one OpenAI `error` event with the reason, and closes with 4000 + the HTTP
  status it stands for (4400, 4401, 4403, 4404, 4409, 4429, 4503). A draining gateway's refusal is the
  exception: an HTTP 503 (`server_draining`, Retry-After) with nothing for the user to read, which a
  balancer retries on another instance (HAProxy `retry-on 503`) and the openai SDK's reconnect retries too.
- Gemini Live clients (the passthrough routes): an HTTP denial response with the status and a JSON reason,
  as Google's own endpoint answers.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from livegate.translation.errors import error_event

log = logging.getLogger("livegate")

NORMAL = 1000
INVALID_SETUP = 1007
POLICY = 1008
CLIENT_TOO_SLOW = 1008  # recorded in the session log; the close frame itself cannot reach such a client
MESSAGE_TOO_BIG = 1009  # sent by the WebSocket layer itself (uvicorn's ws_max_size)
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012  # a draining gateway closes each session at a turn boundary: the SDK reconnects
BAD_GATEWAY = 1014
NO_CREDENTIALS = 4001
NO_PROJECT = 4002
MODEL_NOT_ALLOWED = 4003  # a passthrough's model refused
FORBIDDEN = 4003  # /v1/realtime: accounting ended the session (blocked key or team, or an administrator)
SESSION_TOO_LONG = 4008
KEY_REVOKED = 4010
BUDGET_EXHAUSTED = 4029
REFUSAL_BASE = 4000  # a refused /v1/realtime handshake closes with 4000 + the HTTP status it stands for
ABNORMAL = 1006  # never sent: what a connection lost without a close frame reports (RFC 6455 §7.1.5)

# Client closes after which the openai SDK reconnects by itself (openai/_websocket_connection.py): a session
# whose client left with one of these waits `reattach_grace_s` for it. Not 1012: that is uvicorn shutting
# this gateway down, and the session cannot outlive the process.
RETRIED_BY_OPENAI_SDK = frozenset({1001, 1005, 1006, 1011, 1013, 1015})
# Codes an endpoint may not put in a close frame (RFC 6455 §7.4.1), and what a relayed close becomes instead.
UNSENDABLE = {1005: NORMAL, 1006: BAD_GATEWAY, 1015: BAD_GATEWAY}

MAX_CLOSE_REASON_BYTES = 123  # RFC 6455: the close frame's payload is 125 bytes, 2 of them the code

Route = Literal["realtime", "passthrough", "both"]


@dataclass(frozen=True)
class CloseCode:
    code: int
    route: Route  # realtime: /v1/realtime; passthrough: the native Gemini Live routes
    meaning: str


TABLE: tuple[CloseCode, ...] = (
    CloseCode(NORMAL, "both", "The session ended normally: the client or Gemini closed cleanly (a passthrough "
                              "relays Gemini's own code and reason)."),
    CloseCode(INVALID_SETUP, "passthrough", "The first frame is not a `setup` with a `model`, names an invalid "
                                            "project or location, is not strict JSON, or a later frame is a "
                                            "second `setup`."),
    CloseCode(POLICY, "passthrough", "No `setup` within 30 seconds."),
    CloseCode(POLICY, "realtime", "A WebRTC call's data channel queued more events than livegate holds (a "
                                  "caller flooding events faster than the session takes them)."),
    CloseCode(CLIENT_TOO_SLOW, "both", "The client read nothing for `client_write_timeout_s`: its connection is "
                                       "dropped (the code is what the session log records, as the close frame "
                                       "cannot reach such a client)."),
    CloseCode(MESSAGE_TOO_BIG, "realtime", "A frame over `max_client_frame_bytes` + 1 MiB (the WebSocket limit); "
                                           "frames between the two limits get an `error` event instead, and the "
                                           "session goes on."),
    CloseCode(INTERNAL_ERROR, "both", "An internal livegate error."),
    CloseCode(SERVICE_RESTART, "realtime", "livegate is shutting down (SIGTERM): the session's state was stored at "
                                           "a turn boundary (at the latest after `drain_timeout_s`). The openai "
                                           "SDK reconnects by itself; with `session_id=` any instance sharing the "
                                           "store carries the session on."),
    CloseCode(BAD_GATEWAY, "both", "Gemini could not be reached, refused the connection, closed it abnormally, "
                                   "or stalled (sent nothing for `upstream_stall_timeout_s` in the middle of a "
                                   "turn); on /v1/realtime an `error` event says which first."),
    CloseCode(NO_CREDENTIALS, "passthrough", "Vertex credentials are not configured, unreadable or rejected "
                                             "(the reason says which)."),
    CloseCode(NO_PROJECT, "passthrough", "No Vertex project id (query `project_id` / `vertex_project`, the setup "
                                         "model or the config)."),
    CloseCode(MODEL_NOT_ALLOWED, "passthrough", "The model is not on this gateway's model list, not served by "
                                                "this backend, or not allowed for the key."),
    CloseCode(SESSION_TOO_LONG, "both", "Accounting: the session reached its maximum duration "
                                        "(`session_expired`; an `error` event first on /v1/realtime)."),
    CloseCode(KEY_REVOKED, "both", "Accounting: the key was deleted, expired or regenerated (`invalid_api_key`)."),
    CloseCode(BUDGET_EXHAUSTED, "both", "Accounting: a budget the session falls under (its key's, the key's "
                                        "team's or user's) is spent (`insufficient_quota`)."),
    CloseCode(FORBIDDEN, "realtime", "Accounting: the key or its team was blocked (`key_blocked`, `team_blocked`), "
                                     "or an administrator ended the session (`session_terminated`)."),
    CloseCode(REFUSAL_BASE + 400, "realtime", "Refused handshake: no `?model=`, or an unknown `?intent=`."),
    CloseCode(REFUSAL_BASE + 401, "realtime", "Refused handshake: missing, unknown, expired or deleted key or "
                                              "client secret."),
    CloseCode(REFUSAL_BASE + 403, "realtime", "Refused handshake: the key may not use this model."),
    CloseCode(REFUSAL_BASE + 404, "realtime", "Refused handshake: unknown model, or no session waiting for a "
                                              "reattach under that `session_id` (`session_not_found`)."),
    CloseCode(REFUSAL_BASE + 409, "realtime", "Refused handshake: the `session_id` belongs to a session another "
                                              "client holds, or another client took it over first "
                                              "(`session_in_use`)."),
    CloseCode(REFUSAL_BASE + 429, "realtime", "Refused handshake: budget spent, rpm limit, or the key's parallel "
                                              "session limit; or every deployment of the model is at its own "
                                              "limits (`no_deployment_available`)."),
    CloseCode(REFUSAL_BASE + 503, "realtime", "Refused handshake: the key store is unavailable, or every "
                                              "deployment of the model is cooling down after failing "
                                              "(`no_deployment_available`)."),
)


def meaning(code: int, route: Route = "realtime") -> str | None:
    """What `code` means on `route` (codes shared by both routes match either)."""
    return next((c.meaning for c in TABLE if c.code == code and c.route in (route, "both")), None)


def sendable(code: int) -> bool:
    """Whether an endpoint may send `code` in a close frame (RFC 6455 §7.4.1)."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_reason(text: str) -> str:
    """A close reason within 123 bytes of UTF-8, cut at a character boundary (reasons put the cause first,
    so what is cut is detail)."""
    data = text.encode()
    return text if len(data) <= MAX_CLOSE_REASON_BYTES else data[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


@dataclass(frozen=True)
class Refusal:
    """A handshake refused: the HTTP status it stands for, a message for the user, an OpenAI-style code."""

    status: int
    message: str
    code: str
    denial: bool = False  # an HTTP denial even to OpenAI clients: a retry elsewhere answers it, not the user

    def body(self) -> dict[str, Any]:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {"error": {"type": kind, "code": self.code, "message": self.message}}


async def refuse(ws: Any, refusal: Refusal, client: Literal["openai", "gemini"], *,
                 subprotocol: str | None = None, accepted: bool = False) -> None:
    """Refuse a WebSocket handshake so that the client can say why (see the module docstring). Nothing
    upstream was opened. A refusal is the client's business: logged at info, without a traceback. An OpenAI
    client's WebSocket may be `accepted` already (a take-over accepts before it waits for the session)."""
    log.info("%s connection refused (%d %s): %s", "realtime" if client == "openai" else "passthrough",
             refusal.status, refusal.code, refusal.message)
    if client == "gemini" or refusal.denial:
        from fastapi.responses import JSONResponse

        headers = {"Retry-After": "1"} if refusal.status == 503 else None
        await ws.send_denial_response(JSONResponse(refusal.body(), status_code=refusal.status, headers=headers))
        return
    event = error_event(refusal.message, code=refusal.code, type="invalid_request_error")
    event["event_id"] = f"event_{secrets.token_hex(8)}"
    try:
        if not accepted:
            await ws.accept(subprotocol=subprotocol)
        await ws.send_text(json.dumps(event))
        await ws.close(code=REFUSAL_BASE + refusal.status, reason=close_reason(f"{refusal.code}: {refusal.message}"))
    except Exception as exc:  # the client left first: nothing to tell it
        log.info("refused realtime client went away: %s", type(exc).__name__)
