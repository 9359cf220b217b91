"""Vertex AI REST passthrough: `/vertex_ai/{path}` -> `https://{location}-aiplatform.googleapis.com/{path}`,
`/vertex_ai/discovery/{path}` -> `https://discoveryengine.googleapis.com/{path}` (also under `/vertex-ai/`).

Method, query and body go through untouched; the client's livegate key is swapped for a google-auth
bearer. Responses stream back chunk by chunk (`streamGenerateContent`, `alt=sse`), with the upstream's
status, headers and body, errors included. Paths naming a publisher model are checked against the
model list (403); a `model_name` in the path is replaced by its entry's model id.

livegate's own answers: 401 bad key, 400 invalid location in the path or a dot segment (`.`, `..`),
403 model not allowed, 408 the request body did not arrive within `http_body_timeout_s`, 413 a body over
`max_request_body_bytes`, 500 Vertex credentials unavailable, 502 Google unreachable, 503 no free
connection to Google in livegate's pool, 504 Google did not answer in time.

The request body is read whole (within its deadline) before a pooled connection to Google is taken, so
slow uploads cannot hold the pool and starve other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from livegate.accounting.gate import Grant, Refusal
from livegate.server import auth
from livegate.server.passthrough.models import ModelMatch, match_model, vertex_scope
from livegate.server.passthrough.usage import last_usage
from livegate.translation.usage import TokenUsage
from livegate.upstream import google_credentials
from livegate.upstream.connection import connect_failure
from livegate.upstream.vertex import valid_location, vertex_host

if TYPE_CHECKING:
    from livegate.server.app import Gateway

log = logging.getLogger("livegate.passthrough")

PREFIXES = ("/vertex_ai", "/vertex-ai")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
DISCOVERY_ORIGIN = "https://discoveryengine.googleapis.com"
TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)  # long generations pause between chunks
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults, named for tests
MAX_USAGE_BODY = 16 * 1024 * 1024  # response bytes kept (beside the stream) to read usage at the end

# Never forwarded: the client's livegate key, hop-by-hop headers, and what httpx or livegate set itself.
_DROP_REQUEST = frozenset({
    "authorization", "api-key", "x-goog-api-key", "x-livegate-api-key", "x-litellm-api-key", "x-goog-user-project",
    "cookie", "host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "accept-encoding", "content-length",
})
# The body is relayed decoded, in chunks of its own: length and encoding are the relay's business.
_DROP_RESPONSE = frozenset({
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer",
    "content-length", "content-encoding",
})
_RAW_VERTEX = re.compile(rb"^/vertex[_-]ai/")
_RAW_DISCOVERY = re.compile(rb"^/vertex[_-]ai/discovery/")
_MODEL = re.compile(r"(?:^|/)models/(?P<model>[^/:]+)")
_DOT_SEGMENTS = frozenset({".", ".."})
_LOCATION = re.compile(r"(?:^|/)locations/(?P<location>[^/]+)")
_USAGE_METHODS = (":generateContent", ":streamGenerateContent")


class RestPassthrough:
    """One per app: the shared httpx client (a connection pool to Google) and the request handler."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # created on first use, inside the serving event loop
            self._client = httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS, follow_redirects=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def handle(self, request: Request, discovery: bool = False) -> Response:
        started = time.monotonic()
        who = await auth.principal(self.gateway, auth.client_key(request.headers), route="vertex_ai")
        if isinstance(who, Refusal):
            return _error(who.status, who.message, who.code)
        path = _upstream_path(request, discovery)
        decoded = request.path_params.get("path", "")
        if _DOT_SEGMENTS.intersection(decoded.split("/")):
            # HTTP clients resolve `..` before sending: `models/<listed>/../<other>` would reach <other>.
            return _error(400, "Paths with '.' or '..' segments are not accepted.", "invalid_path")
        match: ModelMatch | None = None
        location: str | None = None
        asked: str | None = None
        if not discovery:
            for segment in _MODEL.finditer(decoded):  # every model the path names must be on the list
                asked = asked or segment["model"]
                listed = match_model(self.gateway.config, segment["model"])
                if listed is None or listed.route.provider == "simulator":
                    return _error(403, f"The model '{segment['model']}' is not available on this gateway.",
                                  "model_not_allowed")
                match = match or listed
            first = _MODEL.search(decoded)
            if first is not None and match is not None and match.upstream_id != first["model"]:
                # a model_name: Google gets the entry's model id
                path = path.replace(f"models/{first['model']}", f"models/{match.upstream_id}", 1)
            located = _LOCATION.search(decoded)
            if located is not None:
                location = located["location"]
                if not valid_location(location):
                    return _error(400, "Invalid location in the path.", "invalid_location")
        grant = await auth.admit(self.gateway, who, route="vertex_ai/discovery" if discovery else "vertex_ai",
                                 model_route=match.route if match else None,
                                 model=asked if match else None,
                                 upstream_model=match.upstream_id if match else None, headers=request.headers,
                                 session=False)
        if isinstance(grant, Refusal):
            return _error(grant.status, grant.message, grant.code)
        response = await self._forward(request, discovery, path, match, location, started, grant)
        if grant.finished is False and not isinstance(response, StreamingResponse):
            await grant.finish(response.status_code, "failure")
        return response

    async def _forward(self, request: Request, discovery: bool, path: str, match: ModelMatch | None,
                       location: str | None, started: float, grant: Grant) -> Response:
        scope = vertex_scope(self.gateway.config, match.route if match else None, location=location)
        if discovery:
            base = self.gateway.config.vertex.discovery_api_base or DISCOVERY_ORIGIN
        else:
            base = scope.api_base or f"https://{vertex_host(scope.location)}"
        try:
            token = await google_credentials.bearer_token(scope.credentials)
        except google_credentials.CredentialsError as exc:
            return _error(500, str(exc), "vertex_credentials_unavailable")
        url = http_base(base) + path + (f"?{request.url.query}" if request.url.query else "")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        headers += list(token.headers().items())
        body: bytes | None = None
        if "content-length" in request.headers or "transfer-encoding" in request.headers:
            body_or_refusal = await self._read_body(request)
            if isinstance(body_or_refusal, Response):
                return body_or_refusal
            body = body_or_refusal
        upstream_request = self.client().build_request(request.method, url, headers=headers, content=body)
        try:
            upstream = await self.client().send(upstream_request, stream=True)
        except httpx.PoolTimeout:  # livegate's own pool is exhausted: not Google's fault
            log.warning("Vertex REST passthrough: no free upstream connection in time")
            return _error(503, "livegate is at its limit of concurrent requests to Vertex AI; retry shortly.",
                          "gateway_busy")
        except httpx.TimeoutException:
            return _error(504, "Vertex AI did not answer in time.", "upstream_timeout")
        except httpx.TransportError as exc:
            cause: BaseException = exc  # httpx wraps the socket's error: name the host and what to check
            while cause.__cause__ is not None and not isinstance(cause, OSError):
                cause = cause.__cause__
            problem = connect_failure(url, cause, 0)
            log.warning("Vertex REST passthrough failed: %s", problem)
            return _error(502, f"Vertex AI is unreachable: {problem}.", "upstream_unavailable")
        decoded = request.path_params.get("path", "")
        record = _Record(discovery, decoded, request.method, match, upstream, started, grant)
        response = StreamingResponse(record.relay(), status_code=upstream.status_code)
        response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))  # repeated ones too
                                for k, v in upstream.headers.multi_items() if k.lower() not in _DROP_RESPONSE]
        return response


    async def _read_body(self, request: Request) -> bytes | Response:
        """The whole request body within the body deadline and size limit, or livegate's refusal."""
        limits = self.gateway.config.timeouts
        body = bytearray()
        try:
            async with asyncio.timeout(limits.http_body_s):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limits.max_request_body_bytes:
                        return _error(413, f"The request body is over {limits.max_request_body_bytes} bytes.",
                                      "request_too_large", close=True)
        except TimeoutError:
            return _error(408, f"The request body did not arrive within {limits.http_body_s:g} s.",
                          "request_timeout", close=True)
        except ClientDisconnect:
            log.info("Vertex REST passthrough: the client disconnected while sending its request")
            return Response(status_code=400)  # nobody is left to read it
        return bytes(body)


class _Record:
    """Relays one upstream response body and writes the request's log line when it is done."""

    def __init__(self, discovery: bool, path: str, method: str, match: ModelMatch | None,
                 upstream: httpx.Response, started: float, grant: Grant | None = None) -> None:
        self.grant = grant
        self.discovery, self.path, self.method, self.match = discovery, path, method, match
        self.upstream, self.started = upstream, started
        self.metered = upstream.status_code == 200 and path.endswith(_USAGE_METHODS)
        self.body = bytearray()

    async def relay(self) -> AsyncIterator[bytes]:
        outcome = "complete"
        try:
            async for chunk in self.upstream.aiter_bytes():
                if self.metered and len(self.body) + len(chunk) <= MAX_USAGE_BODY:
                    self.body += chunk
                yield chunk
        except httpx.HTTPError as exc:  # headers are out already: all that is left is to cut the stream
            outcome = f"upstream error ({type(exc).__name__})"
            log.warning("Vertex REST passthrough: %s", outcome)
        except BaseException:
            outcome = "client disconnected"
            raise
        finally:
            with contextlib.suppress(Exception):
                await self.upstream.aclose()
            usage = self._log(outcome)
            if self.grant is not None:
                if usage is not None:
                    self.grant.add_usage(usage)
                status = "success" if outcome == "complete" and self.upstream.status_code < 400 else "failure"
                await self.grant.finish(self.upstream.status_code, status, outcome, {"path": self.path})

    def _log(self, outcome: str) -> dict[str, Any] | None:
        usage = None
        if self.metered and len(self.body) < MAX_USAGE_BODY:
            event_stream = "text/event-stream" in self.upstream.headers.get("content-type", "")
            usage = last_usage(bytes(self.body), event_stream)
        totals = TokenUsage.from_metadata(usage) if usage is not None else TokenUsage()
        log.info("passthrough_request_end %s", json.dumps({
            "route": "vertex_ai/discovery" if self.discovery else "vertex_ai",
            "method": self.method,
            "path": self.path,  # without the query string, which may carry a Google API key
            "model": self.match.upstream_id if self.match else None,
            "status": self.upstream.status_code,
            "outcome": outcome,
            "duration_s": round(time.monotonic() - self.started, 3),
            "tokens": totals.summary(),
        }, sort_keys=True))
        return usage


def _upstream_path(request: Request, discovery: bool) -> str:
    """The path to append to the upstream origin, from the raw (still percent-encoded) request path, so an
    encoded `?` or `/` reaches Google as the client wrote it."""
    raw: bytes = request.scope.get("raw_path") or b""
    match = (_RAW_DISCOVERY if discovery else _RAW_VERTEX).match(raw)
    if match is None:  # an encoded prefix (`/vertex%5Fai/`): re-encode the decoded remainder
        return "/" + quote(request.path_params.get("path", ""), safe="/:@!$&'()*+,;=-._~")
    return "/" + raw[match.end():].decode("latin-1")


def http_base(api_base: str) -> str:
    """An origin for httpx: ws(s) becomes http(s) (one `api_base` serves Live and REST), no trailing slash."""
    base = api_base.rstrip("/")
    if base.startswith("wss://"):
        return "https://" + base[len("wss://"):]
    if base.startswith("ws://"):
        return "http://" + base[len("ws://"):]
    return base


def _error(status: int, message: str, code: str, close: bool = False) -> JSONResponse:
    """livegate's own answers, shaped like its other refusals (Google's errors are relayed as they are).
    `close` ends the connection after the answer (the client may still be sending a body we did not read)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    headers = {"connection": "close"} if close else None
    return JSONResponse({"error": {"type": kind, "code": code, "message": message}}, status_code=status,
                        headers=headers)
