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


def redact(text: str) -> str:
    if "=" not in text:
        return text
    return _SECRET_PARAM.sub(lambda m: m["name"] + REDACTED, text)


class RedactSecretQuery(logging.Filter):
    """Rewrites a record's message with credential-like query values replaced (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's business
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_filters() -> None:
    """Attach the filter to the loggers that print request URLs (once per process)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretQuery) for f in logger.filters):
            logger.addFilter(RedactSecretQuery())
