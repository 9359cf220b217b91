"""Virtual keys and client secrets: generation, hashing, durations. Only hashes are stored."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "sk-"
SECRET_PREFIX = "ek_"  # OpenAI's client secrets start with ek_
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|mo)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def new_client_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    """SHA-256 hex of the key, as LiteLLM stores its tokens. Keys carry 192 random bits, so no salt is
    needed for them to be unguessable from the hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def label(token_hash: str | None, alias: str | None = None) -> str:
    """How a key appears in logs and metrics: its alias, else a hash prefix. Never the key."""
    if alias:
        return alias
    return f"key:{token_hash[:12]}" if token_hash else "-"


def parse_duration(value: str | int | float | None, field: str) -> float | None:
    """LiteLLM's duration strings ("30s", "30m", "1h", "30d", "1w", "1mo") in seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{field}: expected a positive duration")
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"{field}: expected a duration such as \"30s\", \"1h\", \"30d\", got {value!r}")
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise ValueError(f"{field}: expected a positive duration")
    return seconds
