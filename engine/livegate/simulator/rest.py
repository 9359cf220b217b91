"""The simulator's REST side: `generateContent` and `streamGenerateContent` on the Live port, as Google serves them.

livegate answers out-of-band responses (conversation "none") by a generateContent call of the session model's
family beside the live session; the simulator serves that call on the same origin as its WebSocket endpoint, so
a route's `api_base` covers both, as it does at Google:

    POST /{version}/models/{model}:generateContent | :streamGenerateContent[?alt=sse]          (AI Studio)
    POST /{version}/projects/P/locations/L/publishers/google/models/{model}:...                (Vertex AI)

Like the real service: the API key is checked; a Live model (any family row of the capability table) is not
found for generateContent (404 NOT_FOUND); a body without `contents` is INVALID_ARGUMENT (400); the answer is
text, streamed as SSE `data:` chunks (or one JSON array without `alt=sse`), the last chunk with `finishReason`
and `usageMetadata` (`candidatesTokenCount` on both backends: REST never says `responseTokenCount`);
`generationConfig.maxOutputTokens` cuts the answer (`MAX_TOKENS`). The answer is the script's: it echoes the last
user text (or recalls the earlier ones), naming the system instruction it was given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import script

_PATH = re.compile(r"/(?P<version>v[0-9][a-z0-9]*)/(?:projects/[^/]+/locations/[^/]+/publishers/google/)?"
                   r"models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)")


@dataclass
class RestCall:
    """One REST request the simulator answered (the tests' window)."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    status: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # the answer's chunks


@dataclass
class Answer:
    status: int
    chunks: list[dict[str, Any]]  # one JSON object per chunk (an error: one)
    sse: bool  # streamed as SSE `data:` events
    array: bool = False  # streamGenerateContent without alt=sse: the chunks as one JSON array

    def body(self) -> list[bytes]:
        """The HTTP body, in the pieces the simulator sends with a pause between them."""
        if self.sse:
            return [b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in self.chunks]
        return [json.dumps(self.chunks if self.array else self.chunks[0]).encode()]


def _error(status: int, google_status: str, message: str) -> Answer:
    return Answer(status, [{"error": {"code": status, "message": message, "status": google_status}}], False)


def _text_of(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return "".join(p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str))


def answer_text(contents: list[Any], instruction: str) -> str:
    """What the simulator says to `contents` (Gemini Content) under `instruction`."""
    said = [_text_of(c) for c in contents if isinstance(c, dict) and c.get("role", "user") == "user" and _text_of(c)]
    last = said[-1] if said else ""
    answer = script.recall_answer(said[:-1]) if script.asks_recall(last) else script.echo_answer(last)
    return f"{answer} (instructions: {instruction})" if instruction else answer


def generate(path: str, headers: dict[str, str], body: bytes, api_key: str | None,
             is_live_model: Callable[[str], bool]) -> tuple[Answer, Any]:
    """The answer to one REST request, and its parsed body (None when it was no JSON)."""
    match = _PATH.fullmatch(urlsplit(path).path)
    if match is None:
        return _error(404, "NOT_FOUND", "Not a generateContent endpoint."), None
    query = parse_qs(urlsplit(path).query)
    if api_key is not None:
        keys = {headers.get("x-goog-api-key"), *query.get("key", [])}
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            keys.add(token.strip())
        if api_key not in keys:
            return _error(401, "UNAUTHENTICATED", "Missing or invalid API key."), None
    model, version = match["model"], match["version"]
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), None
    if is_live_model(model):
        return _error(404, "NOT_FOUND", f"models/{model} is not found for API version {version}, or is not "
                                        "supported for generateContent. Call ListModels to see the list of "
                                        "available models and their supported methods."), request
    contents = request.get("contents") if isinstance(request, dict) else None
    if not isinstance(contents, list) or not contents:
        return _error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified"), request
    instruction = _text_of(request.get("systemInstruction") or request.get("system_instruction") or {})
    text = answer_text(contents, instruction)
    config = request.get("generationConfig") or request.get("generation_config") or {}
    limit = config.get("maxOutputTokens") or config.get("max_output_tokens")
    finish = "STOP"
    if isinstance(limit, int) and limit > 0 and script.text_tokens(text) > limit:
        text, finish = text[: limit * script.CHARS_PER_TEXT_TOKEN], "MAX_TOKENS"
    pieces = script.split_text(text) if match["method"] == "streamGenerateContent" else [text]
    prompt = script.text_tokens(instruction + "".join(_text_of(c) for c in contents))
    candidates: list[dict[str, Any]] = [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": 0}
                                        for piece in pieces]
    candidates[-1]["finishReason"] = finish
    chunks: list[dict[str, Any]] = [{"candidates": [c], "modelVersion": model} for c in candidates]
    chunks[-1]["usageMetadata"] = script.usage_metadata("vertex", {"TEXT": prompt}, {"TEXT": script.text_tokens(text)})
    stream = match["method"] == "streamGenerateContent"
    sse = stream and query.get("alt") == ["sse"]
    return Answer(200, chunks, sse, array=stream and not sse), request


def http_head(status: int, content_type: str) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
            "Server: livegate-simulator\r\n\r\n").encode()
