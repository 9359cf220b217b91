"""`POST /v1/realtime/calls` and `POST /v1/realtime/calls/{call_id}/hangup`, as OpenAI serves them.

    POST /v1/realtime/calls[?model=M]       Authorization: Bearer <key or client secret>
        Content-Type: application/sdp       the offer
        Content-Type: multipart/form-data   `sdp` (the offer) and `session` (JSON: the session's settings)
    -> 201, Content-Type: application/sdp, the answer; Location: /v1/realtime/calls/{call_id}

The model comes from `?model=`, else the form's `session.model`, else the client secret's. Refusals are
JSON `{"error": {type, code, message, param}}` with the HTTP status a WebSocket refusal stands for (401 key,
403 model not allowed, 404 unknown model, 429 limits), plus 400 for a bad offer or session, 413 for a body
over 256 KB, 415 for another content type, 501 without the `webrtc` extra, 503 at webrtc_max_calls.
Both routes answer CORS preflights, so a page served from anywhere can call (examples/webrtc.html).

aiortc is imported by the first call, never at start-up (the `webrtc` extra may not be installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import importlib.util
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response

from livegate.accounting.gate import Refusal
from livegate.server import auth
from livegate.server.admin import ApiError, refusal_response

if TYPE_CHECKING:
    from livegate.server.app import Gateway
    from livegate.webrtc.call import Call

log = logging.getLogger("livegate.webrtc")

ROUTE = "/v1/realtime/calls"
MAX_BODY_BYTES = 256 * 1024
BETA_HEADER_VALUE = "realtime=v1"
_SCRIPT = Path(__file__).resolve().parent.parent / "server" / "static" / "webrtc.js"
# A page on another origin may call (OpenAI's calls API allows it too): the key or client secret travels as
# a bearer token, never a cookie, so no origin gains anything it does not hold. Location is read by the page.
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Location"}


class CallRegistry:
    """The calls this instance holds, by id."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self.calls)

    def start(self, call: Call) -> None:
        self.calls[call.id] = call
        task = asyncio.create_task(call.run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def ended(self, call: Call) -> None:
        self.calls.pop(call.id, None)

    async def hang_up_all(self, timeout: float = 5.0) -> None:
        """Shutdown: every call ends (spend rows written by the sessions) before the store stops."""
        for call in list(self.calls.values()):
            call.hang_up(1001, "livegate is shutting down")
        if self.tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*self.tasks, return_exceptions=True)


def webrtc_available() -> bool:
    return importlib.util.find_spec("aiortc") is not None and importlib.util.find_spec("av") is not None


def add_webrtc_routes(app: FastAPI, gateway: Gateway) -> CallRegistry:
    registry = CallRegistry()

    async def create(request: Request) -> Response:
        try:
            response = await _create(gateway, registry, request)
        except ApiError as exc:
            response = exc.response()
        response.headers.update(CORS)
        return response

    async def preflight() -> Response:
        return Response(status_code=204, headers={**CORS, "Access-Control-Allow-Methods": "POST",
                                                  "Access-Control-Allow-Headers": "Authorization, Content-Type, "
                                                  "OpenAI-Beta", "Access-Control-Max-Age": "600"})

    async def hangup(call_id: str, request: Request) -> Response:
        who = await auth.principal(gateway, auth.client_key(request.headers), realtime=True)
        call = registry.calls.get(call_id)
        if isinstance(who, Refusal):
            response: Response = refusal_response(who)
        elif call is None or not who.may_hang_up(call.grant.principal):  # its opener, key or the master
            response = ApiError(404, f"No call '{call_id[:80]}' is active on this gateway.",
                                "call_not_found").response()
        else:
            call.hang_up()
            response = Response(status_code=200)
        response.headers.update(CORS)
        return response

    async def script() -> FileResponse:
        return FileResponse(_SCRIPT, media_type="text/javascript")

    app.add_api_route(ROUTE, create, methods=["POST"], include_in_schema=False)
    app.add_api_route(ROUTE + "/{call_id}/hangup", hangup, methods=["POST"], include_in_schema=False)
    for path in (ROUTE, ROUTE + "/{call_id}/hangup"):
        app.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)
    app.add_api_route("/playground/webrtc.js", script, methods=["GET"], include_in_schema=False)
    return registry


async def _create(gateway: Gateway, registry: CallRegistry, request: Request) -> Response:
    if not webrtc_available():
        raise ApiError(501, "WebRTC calls need livegate's webrtc extra: pip install 'livegate[webrtc]'.",
                       "webrtc_unavailable")
    offer, session = await _offer(request)
    who = await auth.principal(gateway, auth.client_key(request.headers), realtime=True)
    if isinstance(who, Refusal):
        return refusal_response(who)
    model = request.query_params.get("model") or (session or {}).get("model") or (
        who.secret.session.get("model") if who.secret is not None and who.secret.session else None)
    if not isinstance(model, str) or not model:
        raise ApiError(400, "Name the model: ?model=, or session.model in the form, or a client secret's.",
                       "missing_model", "model")
    route = gateway.config.route(model)
    if route is None:
        raise ApiError(404, f"The model '{model[:200]}' does not exist on this gateway.", "model_not_found", "model")
    limit = gateway.config.webrtc.max_calls
    if limit is not None and len(registry) >= limit:
        log.warning("refusing a call: %d calls open (webrtc_max_calls)", len(registry))
        response = ApiError(503, f"This gateway holds its maximum of {limit} calls; try again shortly.",
                            "calls_at_capacity").response()
        response.headers["Retry-After"] = "5"
        return response
    grant = await auth.admit(gateway, who, route=ROUTE, model_route=route, model=model, headers=request.headers)
    if isinstance(grant, Refusal):
        return refusal_response(grant)
    from livegate.server.app import place
    from livegate.webrtc.call import Call, OfferError

    placement = await place(gateway, route, model, grant)  # a deployment of the model's pool (or a fallback's)
    if isinstance(placement, Refusal):
        return refusal_response(placement)

    beta = request.headers.get("openai-beta", "").lower() == BETA_HEADER_VALUE
    try:
        call = Call(gateway, placement=placement, model=model, grant=grant, beta=beta, session_update=session,
                    has_channel="\nm=application" in offer, on_end=registry.ended)
        answer = await call.answer(offer)
    except OfferError as exc:
        await placement.release()
        await grant.finish(None, "failure", "bad offer")
        raise ApiError(400, str(exc), "invalid_offer", "sdp") from None
    except BaseException:
        await placement.release()
        await grant.finish(None, "failure", "the call could not be set up")
        raise
    registry.start(call)
    log.info("call %s: %s on %s", call.id, who.label, model)
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"{ROUTE}/{call.id}"})


async def _offer(request: Request) -> tuple[str, dict[str, Any] | None]:
    """(the SDP offer, the form's session or None), or an ApiError saying what is wrong."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"The offer is over {MAX_BODY_BYTES // 1024} KB.", "request_too_large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    session: Any = None
    if kind == "application/sdp":
        sdp = _text(body, "sdp")
    elif kind == "multipart/form-data":
        fields = _form(request.headers["content-type"], body)
        if "sdp" not in fields:
            raise ApiError(400, "The form has no `sdp` field (the offer).", "missing_sdp", "sdp")
        sdp = _text(fields["sdp"], "sdp")
        if "session" in fields:
            try:
                session = json.loads(fields["session"])
            except ValueError:
                raise ApiError(400, "session: expected a JSON object", "invalid_json", "session") from None
            if not isinstance(session, dict):
                raise ApiError(400, "session: expected a JSON object", "invalid_type", "session")
    else:
        raise ApiError(415, "Send the offer as Content-Type: application/sdp, or as multipart/form-data with "
                            "`sdp` and `session`.", "unsupported_media_type")
    sdp = sdp.replace("\r\n", "\n").replace("\n", "\r\n")
    if not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise ApiError(400, "The body is not an SDP offer (it must start with v=0 and have m= sections).",
                       "invalid_offer", "sdp")
    audio = sdp.split("\nm=audio", 1)
    if len(audio) == 2 and "opus/48000" not in audio[1].split("\nm=", 1)[0].lower():
        raise ApiError(400, "The offer's audio has no Opus; livegate's calls speak Opus.", "invalid_offer", "sdp")
    return sdp, session


def _text(data: bytes, field: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ApiError(400, f"{field}: not UTF-8 text", "invalid_offer", field) from None


def _form(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart/form-data body by name (the standard library's MIME parser)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ApiError(400, "The multipart body could not be read (check its boundary).", "invalid_form")
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = payload if isinstance(payload, bytes) else b""
    return fields
