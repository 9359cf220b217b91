"""Wire helpers for the simulator: key spelling, base64 and MIME parameters.

The real service parses client JSON with proto3 rules, which accept both the lowerCamelCase JSON name and
the original snake_case field name at every level; the google-genai SDK relies on that and sends a mix
(docs/protocol-notes.md §3). The simulator normalises everything to camelCase once, on receipt.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

# Fields whose value is free-form user data (function args/results, JSON Schema documents, labels):
# their keys are copied verbatim, never re-spelled.
_OPAQUE = frozenset({"args", "response", "parametersJsonSchema", "responseJsonSchema", "labels"})
# Fields that map user-chosen names to normalisable values (OpenAPI Schema `properties`).
_NAME_MAPS = frozenset({"properties"})

_RATE = re.compile(r"rate\s*=\s*(\d+)", re.IGNORECASE)


def camel(key: str) -> str:
    """`mime_type` -> `mimeType`; already-camel keys are returned unchanged."""
    if "_" not in key.strip("_"):
        return key
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def normalize_keys(value: Any) -> Any:
    """Return a copy of a parsed JSON value with every object key spelled in camelCase."""
    if isinstance(value, list):
        return [normalize_keys(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = camel(key)
        if name in _OPAQUE:
            out[name] = item
        elif name in _NAME_MAPS and isinstance(item, dict):
            out[name] = {k: normalize_keys(v) for k, v in item.items()}
        else:
            out[name] = normalize_keys(item)
    return out


def b64decode(data: str) -> bytes:
    """Decode standard or URL-safe base64, padded or not. Raises ValueError on garbage."""
    text = "".join(data.split()).rstrip("=")
    try:
        # altchars maps '-'/'_' onto '+'/'/', so both alphabets decode; validate rejects anything else.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64 data: {exc}") from None


def b64encode(data: bytes) -> str:
    """Standard, padded base64 (what the real service sends)."""
    return base64.b64encode(data).decode("ascii")


def sample_rate(mime_type: str | None, default: int = 16000) -> int:
    """The `rate=` parameter of an `audio/pcm;rate=N` MIME type."""
    match = _RATE.search(mime_type or "")
    rate = int(match.group(1)) if match else default
    return rate if rate > 0 else default
