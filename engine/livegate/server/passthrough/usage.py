"""The last `usageMetadata` of a REST response body. Reading it is the usage ledger's
(livegate.translation.usage), as for every other route."""

from __future__ import annotations

import json
from typing import Any


def last_usage(body: bytes, event_stream: bool) -> dict[str, Any] | None:
    """The last `usageMetadata` of a generateContent / streamGenerateContent response body (a JSON object,
    a JSON array of chunks, or server-sent events). Streamed chunks carry running totals, so the last wins."""
    chunks: list[Any] = []
    try:
        if event_stream:
            for line in body.decode().splitlines():
                if line.startswith("data:") and line[5:].strip():
                    chunks.append(json.loads(line[5:]))
        else:
            parsed = json.loads(body)
            chunks = parsed if isinstance(parsed, list) else [parsed]
    except ValueError:
        return None
    for chunk in reversed(chunks):
        usage = chunk.get("usageMetadata") if isinstance(chunk, dict) else None
        if isinstance(usage, dict):
            return usage
    return None
