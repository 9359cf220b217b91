"""Keys never reach a log line: query parameters that may carry a credential are redacted from what uvicorn
(access lines, WebSocket handshake lines) and httpx (the REST passthrough's upstream URLs) log.

livegate never reads a key from the query string, but clients put one there anyway (`?key=`, `?api_key=`,
`?access_token=`): it must not end up in the logs.
"""

from __future__ import annotations

import logging
import re

# A query parameter whose name suggests a credential, up to the next `&`, space, quote or the end.
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&][^=&\s\"']*(?:key|token|secret|password|passwd|auth|signature|sig|credential)[^=&\s\"']*=)"
    r"[^&\s\"']*",
    re.IGNORECASE)
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "httpx")


# LiteLLM's /key/{key}/regenerate puts a key in the path.
_KEY_IN_PATH = re.compile(r"(?P<name>/key/)[^/\s\"'?]+(?=/regenerate)")


def redact(text: str) -> str:
    if "/regenerate" in text:
        text = _KEY_IN_PATH.sub(lambda m: m["name"] + REDACTED, text)
    if "=" not in text:
        return text
    return _SECRET_PARAM.sub(lambda m: m["name"] + REDACTED, text)


class RedactSecretQuery(logging.Filter):
    """Redacts credential-like query values in a record's message and arguments. The arguments keep their
    shape (uvicorn's access formatter unpacks them); only an argument whose text changes becomes a str."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted_arg(arg) for arg in record.args)
        return True


def _redacted_arg(arg: object) -> object:
    if isinstance(arg, int | float) or arg is None:
        return arg
    text = str(arg)
    cleaned = redact(text)
    return arg if cleaned == text else cleaned


def install_log_filters() -> None:
    """Attach the filter to the loggers that print request URLs (once per process)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretQuery) for f in logger.filters):
            logger.addFilter(RedactSecretQuery())
