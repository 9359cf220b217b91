"""Recent errors of this instance, for the admin page: handshake refusals (which leave no spend row) and
sessions that ended in failure. Bounded; keys appear as their alias or hash prefix, never themselves."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

MAX_ENTRIES = 200


class RecentErrors:
    def __init__(self, size: int = MAX_ENTRIES) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)

    def refusal(self, route: str, model: str | None, key: str, status: int, code: str, message: str) -> None:
        self.entries.append({"time": time.time(), "kind": "refusal", "route": route, "model": model, "key": key,
                             "status": status, "code": code, "message": message[:300]})

    def session_failed(self, route: str, model: str | None, key: str, close_code: int | None, reason: str,
                       code: str | None) -> None:
        self.entries.append({"time": time.time(), "kind": "session", "route": route, "model": model, "key": key,
                             "status": close_code, "code": code, "message": reason[:300]})

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        return list(reversed(self.entries))[:limit]
