"""Out-of-band responses beside the live session: one streamGenerateContent call (SSE) to the session's backend.

The session core commands a `GenerateRequest` (translation/commands.py) when a client asks for a response with
`conversation: "none"`; the pump runs `stream_generate` and hands each event to the core (`side_result`):

    {"delta": "<text>"}                                           as the answer streams
    {"done": True, "finish_reason": str | None, "usage_metadata": {...} | None}   at its end
    {"error": {"type": ..., "code": ..., "message": ...}}         instead of the end, on any failure

Nothing raises: an HTTP error (Google's `{error: {code, message, status}}`), an unreachable backend, a stream
that stalls for `stall_s` or breaks off are all one `error` event. The request's credentials are the live
connection's (the provider's `target()`); no URL, header or key reaches an event or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from livegate.upstream.base import Provider
from livegate.upstream.google_credentials import CredentialsError

log = logging.getLogger("livegate.upstream")

Event = dict[str, Any]


def _error(kind: str, code: str, message: str) -> Event:
    return {"error": {"type": kind, "code": code, "message": message}}


def _google_error(status: int, body: bytes) -> Event:
    """Google's error answer (`{error: {code, message, status}}`) as a failed response's error."""
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    code = str(error.get("status") or status)
    message = str(error.get("message") or f"HTTP {status}")
    kind = "invalid_request_error" if 400 <= status < 500 and status not in (401, 403, 429) else "server_error"
    return _error(kind, code.lower(), f"The out-of-band answer failed: {message}")


def _texts(chunk: dict[str, Any]) -> str:
    candidates = chunk.get("candidates") or [{}]
    parts = ((candidates[0] or {}).get("content") or {}).get("parts") or []
    return "".join(part["text"] for part in parts if isinstance(part, dict) and isinstance(part.get("text"), str)
                   and not part.get("thought"))


async def stream_generate(provider: Provider, model: str, body: dict[str, Any], *, connect_s: float,
                          stall_s: float) -> AsyncIterator[Event]:
    """Ask `model` for an answer to `body` and stream it as events (module docstring); never raises."""
    try:
        target = await provider.target()
    except CredentialsError as exc:
        yield _error("server_error", "credentials", str(exc))
        return
    timeout = httpx.Timeout(stall_s, connect=connect_s)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    try:
        async with httpx.AsyncClient(timeout=timeout) as http, \
                http.stream("POST", provider.generate_url(model), json=body, headers=target.headers) as answer:
            if answer.status_code >= 400:
                yield _google_error(answer.status_code, await answer.aread())
                return
            async for line in answer.aiter_lines():
                if not line.startswith("data:"):
                    continue
                chunk = orjson.loads(line[5:].strip() or "{}")
                if isinstance(chunk.get("error"), dict):  # an error mid-stream
                    yield _google_error(int(chunk["error"].get("code") or 500), orjson.dumps(chunk))
                    return
                if text := _texts(chunk):
                    yield {"delta": text}
                candidate = (chunk.get("candidates") or [{}])[0] or {}
                finish = candidate.get("finishReason") or finish
                usage = chunk.get("usageMetadata") or usage
    except httpx.TimeoutException:
        yield _error("server_error", "timeout", f"The out-of-band answer stalled for {stall_s:g} s.")
        return
    except (httpx.HTTPError, OSError, orjson.JSONDecodeError) as exc:
        log.info("out-of-band answer from %s failed: %s", model, type(exc).__name__)
        yield _error("server_error", "upstream_error", f"The out-of-band answer broke off ({type(exc).__name__}).")
        return
    yield {"done": True, "finish_reason": finish, "usage_metadata": usage}
