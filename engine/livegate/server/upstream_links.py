"""A realtime session's Gemini connections, by the link number its core gave each (links count from 1).

A connection is only here while the session uses it: `close(link)` takes it out first, so its reader stops
at its next frame, and a send on a connection Gemini closed meanwhile is left to that reader to report.
"""

from __future__ import annotations

import contextlib
from typing import Any

from websockets.exceptions import ConnectionClosed

from livegate.upstream.connection import UpstreamConnection


class UpstreamLinks:
    def __init__(self) -> None:
        self._open: dict[int, UpstreamConnection] = {}

    def add(self, link: int, conn: UpstreamConnection) -> None:
        self._open[link] = conn

    def __contains__(self, link: int) -> bool:
        return link in self._open

    def send_now(self, link: int | None, messages: list[dict[str, Any]]) -> bool:
        """Write the messages at once where nothing would wait (UpstreamConnection.send_now); False: none was
        written, `send` them."""
        conn = self._open.get(link or 0)
        if conn is None:
            return True  # (a link closed meanwhile: its messages go nowhere, as `send` does)
        if len(messages) == 1:
            return conn.send_now(messages[0])
        return False

    async def send(self, link: int | None, messages: list[dict[str, Any]]) -> None:
        if (conn := self._open.get(link or 0)) is None:
            return
        for message in messages:
            try:
                await conn.send(message)
            except ConnectionClosed:
                return  # its reader reports the close

    async def close(self, link: int) -> None:
        if (conn := self._open.pop(link, None)) is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close_all(self) -> None:
        for link in list(self._open):
            await self.close(link)
