"""Native Gemini Live passthrough: the client speaks Gemini Live, livegate only authenticates it,
injects Google credentials, completes `setup.model`, and forwards every frame unchanged.

Routes (each also accepts the path google-genai appends to a `base_url`, e.g.
`/vertex_ai/live/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent`):

    /v1/vertex-ai/live, /vertex-ai/live, /vertex_ai/live, /v1/vertex_ai/live   Vertex AI (google-auth bearer)
    /gemini/live, /v1/gemini/live                                              Google AI Studio (server API key)

Handshake refusals (HTTP, JSON reason): 401 bad livegate key, 400 invalid project/location query,
404 unknown path suffix. After the handshake the first client frame must be `setup` (strict JSON: no
duplicate keys, NaN/Infinity, lone surrogates, nesting over MAX_SETUP_DEPTH). Close codes: the
"passthrough" rows of livegate/close_codes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from livegate import __version__
from livegate.accounting.gate import Grant
from livegate.close_codes import (
    ABNORMAL,
    BAD_GATEWAY,
    CLIENT_TOO_SLOW,
    INTERNAL_ERROR,
    INVALID_SETUP,
    MODEL_NOT_ALLOWED,
    NO_CREDENTIALS,
    NO_PROJECT,
    NORMAL,
    POLICY,
    UNSENDABLE,
    Refusal,
    close_reason,
    refuse,
    sendable,
)
from livegate.config import ModelRoute
from livegate.observability.passthrough import PassthroughTurns
from livegate.observability.session import SessionWatch, watch_passthrough
from livegate.server import auth
from livegate.server.client_io import ClientStalled, FairShare, abort_client, send_within
from livegate.server.passthrough.models import match_model, vertex_scope
from livegate.translation.usage import UsageLedger
from livegate.upstream import google_credentials
from livegate.upstream.aistudio import AIStudioProvider
from livegate.upstream.connection import CLOSE_TIMEOUT, MAX_FRAME_BYTES, close_promptly, connect_failure
from livegate.upstream.vertex import (
    VERTEX_VERSION,
    live_url,
    model_resource,
    resource_scope,
    short_model_id,
    valid_location,
    valid_project,
    valid_version,
)

if TYPE_CHECKING:
    from livegate.server.app import Gateway

log = logging.getLogger("livegate.passthrough")

Backend = Literal["vertex", "aistudio"]

VERTEX_PATHS = ("/v1/vertex-ai/live", "/vertex-ai/live", "/vertex_ai/live", "/v1/vertex_ai/live")
AISTUDIO_PATHS = ("/gemini/live", "/v1/gemini/live")

SETUP_TIMEOUT = 30.0
UPSTREAM_OPEN_TIMEOUT = 10.0
MAX_SETUP_DEPTH = 64  # JSON nesting levels in a setup (tool schemas included)

# The method paths google-genai appends to its base_url; the version in them is kept for the upstream.
_SUFFIX = {
    "vertex": re.compile(r"/?ws/google\.cloud\.aiplatform\.(?P<version>[^./]+)\.LlmBidiService/BidiGenerateContent"),
    "aistudio": re.compile(
        r"/?ws/google\.ai\.generativelanguage\.(?P<version>[^./]+)\.GenerativeService\.BidiGenerateContent"),
}
_NAMES = {"vertex": "Vertex AI", "aistudio": "Google AI Studio"}


class _Close(Exception):
    """End the session with this close code and reason (no secret in either)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class _Plan:
    url: str
    headers: dict[str, str]  # carry credentials: never logged
    setup_model: str
    upstream_model: str
    project: str | None = None
    location: str | None = None

    def __repr__(self) -> str:
        return f"_Plan({self.url!r}, {self.setup_model!r})"


async def live_passthrough(ws: WebSocket, gateway: Gateway, backend: Backend, suffix: str = "") -> None:
    """Handshake checks, then one PassthroughSession."""
    offered = list(ws.scope.get("subprotocols") or [])
    who = await auth.principal(gateway, auth.client_key(ws.headers, offered), route=ws.url.path)
    if isinstance(who, Refusal):
        await refuse(ws, who, "gemini")
        return
    version = None
    if suffix.strip("/"):
        match = _SUFFIX[backend].fullmatch(suffix)
        if match is None or not valid_version(match["version"]):
            await refuse(ws, Refusal(404, f"Not a {_NAMES[backend]} Live endpoint: {ws.url.path}", "not_found"),
                         "gemini")
            return
        version = match["version"]
    query = ws.query_params
    project = (query.get("project_id") or query.get("vertex_project")) if backend == "vertex" else None
    location = (query.get("location") or query.get("vertex_location")) if backend == "vertex" else None
    if project is not None and not valid_project(project):
        await refuse(ws, Refusal(400, "Invalid project_id.", "invalid_project"), "gemini")
        return
    if location is not None and not valid_location(location):
        await refuse(ws, Refusal(400, "Invalid location.", "invalid_location"), "gemini")
        return
    # the model is known at `setup`: checked against the key there (4003)
    grant = await auth.admit(gateway, who, route="vertex_ai/live" if backend == "vertex" else "gemini/live",
                             headers=ws.headers)
    if isinstance(grant, Refusal):
        await refuse(ws, grant, "gemini")
        return
    chosen = next((p for p in offered if not p.startswith(auth.INSECURE_KEY_PROTOCOL)), None)
    try:
        await ws.accept(subprotocol=chosen)
    except BaseException:
        await grant.finish(None, "failure", "handshake failed")
        raise
    await PassthroughSession(ws, gateway, backend, version, project, location, grant).run()


class PassthroughSession:
    def __init__(self, ws: WebSocket, gateway: Gateway, backend: Backend, version: str | None,
                 project: str | None, location: str | None, grant: Grant | None = None) -> None:
        self.grant = grant  # accounting: usage, cost, limits
        self.ws = ws
        self.gateway = gateway
        self.backend: Backend = backend
        self.client_version = version
        self.query_project = project
        self.query_location = location
        self.usage = grant.meter if grant is not None else UsageLedger()  # the one usage ledger
        self.started = time.monotonic()
        self.model: str | None = None  # what the client asked for
        self.plan: _Plan | None = None
        self.upstream: ClientConnection | None = None
        self.closed: tuple[int, str, str] | None = None  # (code, reason, by whom)
        self.watch = SessionWatch()  # the session's span (tracing on), once its setup named the model
        self.turns: PassthroughTurns | None = None  # its turn spans and time to first audio

    async def run(self) -> None:
        try:
            setup = await self._first_frame()
            if setup is not None:
                frame, message = setup
                self.plan = await self._plan(message["setup"]["model"])
                connecting = time.monotonic()
                self.upstream = await self._open(self.plan)
                if self.grant is not None:
                    self.grant.upstream_connected(time.monotonic() - connecting)
                await self.upstream.send(self._setup_frame(frame, message, self.plan.setup_model))
                await self._pump(self.upstream)
        except _Close as close:
            await self._close_client(close.code, close.reason, "livegate")
        except ConnectionClosed as exc:  # the upstream went away while we sent the setup
            await self._upstream_closed(exc)
        except WebSocketDisconnect as exc:
            self._ended(exc.code or NORMAL, "client disconnected", "client")
        except Exception:
            log.exception("passthrough session failed")
            await self._close_client(INTERNAL_ERROR, "internal error", "livegate")
        finally:
            if self.upstream is not None:
                with contextlib.suppress(Exception):
                    await close_promptly(self.upstream)
            self._log_end()
            if self.grant is not None:
                code, reason, _ = self.closed or (NORMAL, "", "livegate")
                self.watch.finish(self.grant, code, reason, "gemini", None)
                await self.grant.finish(code, "success" if code == NORMAL else "failure", reason)

    # --- setup -------------------------------------------------------------------------------------------

    async def _first_frame(self) -> tuple[str | bytes, dict[str, Any]] | None:
        """The client's setup frame as received and parsed, or None if the client left first."""
        try:
            async with asyncio.timeout(SETUP_TIMEOUT):
                message = await self.ws.receive()
        except TimeoutError:
            raise _Close(POLICY, f"no setup message within {SETUP_TIMEOUT:g} s") from None
        if message["type"] == "websocket.disconnect":
            self._ended(message.get("code") or NORMAL, "client disconnected", "client")
            return None
        frame = message["text"] if message.get("text") is not None else message.get("bytes")
        parsed = strict_json(frame) if frame is not None else None  # what is checked is what Gemini reads
        setup = parsed.get("setup") if isinstance(parsed, dict) else None
        if not isinstance(setup, dict) or not isinstance(setup.get("model"), str) or not setup["model"]:
            raise _Close(INVALID_SETUP, 'the first message must be {"setup": {"model": ...}}')
        assert frame is not None and isinstance(parsed, dict)
        self.model = setup["model"][:300]  # for the log line; what is forwarded is untouched
        return frame, parsed

    async def _plan(self, model: str) -> _Plan:
        match = match_model(self.gateway.config, model)
        if match is None:
            raise _Close(MODEL_NOT_ALLOWED, f"model not available on this gateway: {model!r}")
        if self.grant is not None:
            refusal = self.grant.bind_model(match.route.model_name, match.upstream_id, match.route.model_info)
            if refusal is not None:
                raise _Close(MODEL_NOT_ALLOWED, refusal.message)
            self.grant.limit_duration(match.route.max_session_seconds)
            self.watch, self.turns = watch_passthrough(self.gateway, match.route, model, self.backend, self.grant,
                                                       self.ws.headers)
        provider = match.route.provider
        if self.backend == "vertex":
            if provider == "simulator":
                return self._simulator_vertex_plan(model, match.upstream_id, match.route)
            return await self._vertex_plan(model, match.upstream_id, match.route)
        if provider == "vertex_ai":
            raise _Close(MODEL_NOT_ALLOWED, f"model on Vertex AI, use /vertex_ai/live: {model!r}")
        return await self._aistudio_plan(match.upstream_id, match.route)

    async def _vertex_plan(self, model: str, upstream_id: str, route: ModelRoute) -> _Plan:
        named_project, named_location = resource_scope(model)  # a full resource path is kept as sent
        if (named_project and not valid_project(named_project)) or (
                named_location and not valid_location(named_location)):
            raise _Close(INVALID_SETUP, "setup.model names an invalid project or location")
        scope = vertex_scope(self.gateway.config, route, project=named_project or self.query_project,
                             location=named_location or self.query_location)
        if not scope.project:
            raise _Close(NO_PROJECT, "Vertex AI project id not provided: pass ?project_id=P or configure "
                                           "vertex_project")
        try:
            token = await google_credentials.bearer_token(scope.credentials)
        except google_credentials.CredentialsError as exc:
            raise _Close(NO_CREDENTIALS, str(exc)) from None
        if named_project and short_model_id(model) == upstream_id:
            setup_model = model
        else:
            setup_model = model_resource(scope.project, scope.location, upstream_id)
        version = scope.api_version or self.client_version or VERTEX_VERSION
        return _Plan(live_url(scope.location, version, scope.api_base), token.headers(), setup_model, upstream_id,
                     scope.project, scope.location)

    def _simulator_vertex_plan(self, model: str, upstream_id: str, route: ModelRoute) -> _Plan:
        """A simulator entry on /vertex_ai/live: the simulator's Vertex endpoint, offline, with no Google
        credentials (README "Vertex AI offline, on the simulator"). Project and location are as sent, or
        the configured ones, or placeholders: the simulator checks only their shape."""
        api_base = route.api_base or self.gateway.simulator_url
        if api_base is None:
            raise RuntimeError("the simulator is not running")
        named_project, named_location = resource_scope(model)
        project = (named_project or self.query_project or route.vertex_project or self.gateway.config.vertex.project
                   or "simulator-project")
        location = (named_location or self.query_location or route.vertex_location
                    or self.gateway.config.vertex.location or "us-central1")
        if not (valid_project(project) and valid_location(location)):
            raise _Close(INVALID_SETUP, "setup.model names an invalid project or location")
        setup_model = model if named_project else model_resource(project, location, upstream_id)
        version = route.api_version or self.client_version or VERTEX_VERSION
        return _Plan(live_url(location, version, api_base), {}, setup_model, upstream_id, project, location)

    async def _aistudio_plan(self, upstream_id: str, route: ModelRoute) -> _Plan:
        api_base, api_key = route.api_base, route.api_key
        if route.provider == "simulator":
            api_base, api_key = api_base or self.gateway.simulator_url, api_key or "simulator"
            if api_base is None:
                raise RuntimeError("the simulator is not running")
        provider = AIStudioProvider(upstream_id, api_key=api_key or "", api_base=api_base,
                                    api_version=route.api_version or self.client_version)
        target = await provider.target()
        return _Plan(target.url, target.headers, target.setup_model, upstream_id)

    @staticmethod
    def _setup_frame(frame: str | bytes, message: dict[str, Any], setup_model: str) -> str | bytes:
        """The setup frame as the client sent it, re-serialised only when the model is rewritten."""
        if message["setup"]["model"] == setup_model:
            return frame
        message["setup"]["model"] = setup_model
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        return text.encode() if isinstance(frame, bytes) else text

    async def _open(self, plan: _Plan) -> ClientConnection:
        name = _NAMES[self.backend]
        try:
            return await connect(plan.url, additional_headers=plan.headers, max_size=MAX_FRAME_BYTES,
                                 open_timeout=UPSTREAM_OPEN_TIMEOUT, compression=None, ping_interval=20,
                                 close_timeout=CLOSE_TIMEOUT, user_agent_header=f"livegate/{__version__}")
        except (OSError, InvalidHandshake, TimeoutError) as exc:  # InvalidStatus is an InvalidHandshake
            problem = connect_failure(plan.url, exc, UPSTREAM_OPEN_TIMEOUT)
            log.warning("%s passthrough connection failed: %s", name, problem)
            said = name if isinstance(exc, InvalidStatus) else f"{name} is unreachable"
            raise _Close(BAD_GATEWAY, f"{said}: {problem}") from None

    # --- relay -------------------------------------------------------------------------------------------

    async def _pump(self, upstream: ClientConnection) -> None:
        tasks = {asyncio.create_task(self._client_to_upstream(upstream)),
                 asyncio.create_task(self._upstream_to_client(upstream))}
        if self.grant is not None:
            tasks.add(asyncio.create_task(self._enforce_limits()))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise a failure (-> 1011)

    async def _enforce_limits(self) -> None:
        """Budget spent, key deleted or expired, maximum duration: close with the accounting code and reason."""
        assert self.grant is not None
        stop = await self.grant.wait_stopped()
        raise _Close(stop.close_code, stop.message)

    async def _client_to_upstream(self, upstream: ClientConnection) -> None:
        share = FairShare()
        while True:
            message = await self.ws.receive()
            started = time.perf_counter()
            if message["type"] == "websocket.disconnect":
                code = message.get("code") or NORMAL
                self._ended(code, message.get("reason") or "client disconnected", "client")
                relayed = code if sendable(code) else NORMAL
                with contextlib.suppress(Exception):
                    await close_promptly(upstream, relayed, close_reason(message.get("reason") or ""))
                return
            data = message["text"] if message.get("text") is not None else message.get("bytes")
            if data is None:
                continue
            if may_be_setup(data):
                raise _Close(INVALID_SETUP, "setup may only be sent once, as the first message")
            if self.grant is not None:
                self.grant.client_frame(data)
            if self.turns is not None:
                self.turns.client_frame(data)
            try:
                await upstream.send(data)  # str -> text frame, bytes -> binary frame: as the client sent it
            except ConnectionClosed as exc:
                await self._upstream_closed(exc)
                return
            await share.turn(started)

    async def _upstream_to_client(self, upstream: ClientConnection) -> None:
        share = FairShare()
        while True:
            try:
                frame = await upstream.recv()
            except ConnectionClosed as exc:
                await self._upstream_closed(exc)
                return
            started = time.perf_counter()
            self.usage.observe(frame)
            if self.grant is not None:
                self.grant.upstream_frame(frame)
            if self.turns is not None:
                self.turns.upstream_frame(frame)
            try:
                await send_within(self.ws, frame, self.gateway.config.timeouts.client_write_s)
            except ClientStalled as exc:
                log.info("passthrough dropping a client that stopped reading: %s", exc)
                abort_client(self.ws)
                self._ended(CLIENT_TOO_SLOW, str(exc), "livegate")
                return
            except (WebSocketDisconnect, RuntimeError):
                self._ended(NORMAL, "client disconnected", "client")
                return
            await share.turn(started)

    async def _upstream_closed(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is not None:
            code, reason = exc.rcvd.code, exc.rcvd.reason
        else:
            code, reason = ABNORMAL, f"{_NAMES[self.backend]} connection lost"
        await self._close_client(UNSENDABLE.get(code, code), reason, "upstream")

    # --- ending ------------------------------------------------------------------------------------------

    def _ended(self, code: int, reason: str, by: str) -> None:
        if self.closed is None:
            self.closed = (code, reason, by)

    async def _close_client(self, code: int, reason: str, by: str) -> None:
        if self.closed is not None:
            return
        self._ended(code, reason, by)
        if code != NORMAL or by != "livegate":
            log.info("passthrough closing the client with %d: %s", code, reason)
        try:
            async with asyncio.timeout(self.gateway.config.timeouts.client_write_s):  # a close waits like a write
                await self.ws.close(code if sendable(code) else INTERNAL_ERROR, close_reason(reason))
        except TimeoutError:
            abort_client(self.ws)
        except Exception:
            pass

    def _log_end(self) -> None:
        code, reason, by = self.closed or (NORMAL, "", "livegate")
        plan = self.plan
        log.info("passthrough_session_end %s", json.dumps({
            "route": "vertex_ai/live" if self.backend == "vertex" else "gemini/live",
            "backend": self.backend,
            "model": self.model,
            "upstream_model": plan.setup_model if plan else None,
            "project": plan.project if plan else None,
            "location": plan.location if plan else None,
            "duration_s": round(time.monotonic() - self.started, 3),
            "close_code": code,
            "close_reason": reason,
            "closed_by": by,
            "tokens": self.usage.current().summary(),
        }, sort_keys=True))


class _Duplicate(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Duplicate("duplicate key")
    return result


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth_and_text_ok(value: Any) -> bool:
    """No deeper than MAX_SETUP_DEPTH, and every string encodable (no lone surrogates from `\\ud800` escapes)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_SETUP_DEPTH:
                return False
            for key, child in item.items():
                stack.append((key, depth))
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > MAX_SETUP_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
    return True


def strict_json(frame: str | bytes) -> Any:
    """`frame` parsed as strict JSON, or None: duplicate keys, NaN/Infinity, lone surrogates and nesting
    beyond MAX_SETUP_DEPTH are refused, as parsers disagree on them (with duplicate keys Python keeps the
    last value, another parser the first: livegate would check one setup and Gemini read another)."""
    try:
        parsed = json.loads(frame, object_pairs_hook=_no_duplicate_keys, parse_constant=_not_a_number)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return parsed if _depth_and_text_ok(parsed) else None


def may_be_setup(data: str | bytes) -> bool:
    """Whether a frame after the first may carry a `setup` (which would replace the checked one).
    Frames that cannot spell the key, even with escapes, are not parsed (audio frames are the common case);
    a frame that mentions it but is not strict JSON counts as one, since Gemini's parser may accept it."""
    raw = data.encode() if isinstance(data, str) else data
    if b"setup" not in raw and b"\\u" not in raw:
        return False
    parsed = strict_json(data)
    return parsed is None or (isinstance(parsed, dict) and "setup" in parsed)
