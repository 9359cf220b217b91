"""OpenAI `error` events built by the engine itself (validation, unsupported events, rule failures).

Event-specific refusals are written in mappings/; these are the generic ones.
"""

from __future__ import annotations

from typing import Any


def error_event(message: str, *, code: str | None = None, param: str | None = None,
                event_id: str | None = None, type: str = "invalid_request_error") -> dict[str, Any]:
    error: dict[str, Any] = {"type": type, "code": code, "message": message, "param": param,
                             "event_id": event_id}
    return {"type": "error", "error": error}
