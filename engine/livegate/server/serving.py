"""How livegate runs under uvicorn: the options `livegate` passes, and the HTTP protocol with a header timeout.

uvicorn times out idle keep-alive connections but not a request whose header lines trickle in (slowloris):
such a connection would be held forever without ever reaching the app, and without a key. The protocol
below gives every request `http_header_timeout_s` to deliver its whole header block, then answers 408 and
closes the connection. WebSocket handshakes are HTTP requests too, so they get the same bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from livegate.config import Config
from livegate.server.realtime_route import PROTOCOL

log = logging.getLogger("livegate.http")

# Set by `configure` (create_app calls it, in every worker process): uvicorn builds protocols from a class or
# an import string, and an import string is what survives `--workers` (worker processes are spawned).
_header_timeout = 10.0

_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for the header block of each request."""

    @property
    def header_timeout(self) -> float:
        return _header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a request has started (or is awaited) but its headers are not in
            self._arm_header_timer()
        else:
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm_header_timer()  # between requests uvicorn's keep-alive timeout applies

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closing a connection whose request headers took over %g s", self.header_timeout)
            self.transport.write(_REQUEST_TIMEOUT)
            self.transport.close()


def configure(config: Config) -> None:
    """Apply the config's header deadline to the protocol (per process)."""
    global _header_timeout
    _header_timeout = config.timeouts.http_header_s


def uvicorn_options(config: Config) -> dict[str, Any]:
    """The uvicorn.Config options livegate runs with (the CLI and the tests use the same)."""
    configure(config)
    return {
        "ws": PROTOCOL,  # websockets-sansio handing a session's frames over as they are read
        "loop": "auto",  # uvloop where it is installed (the `uvloop` extra), asyncio's own loop otherwise
        "ws_max_size": config.max_client_frame_bytes + 1024 * 1024,
        # Off by default: base64 audio barely compresses and deflate costs ~30 µs per chunk each way.
        "ws_per_message_deflate": config.client_compression,
        "http": "livegate.server.serving:HeaderTimeoutH11Protocol",
        "timeout_keep_alive": 5,
    }
