"""The spend store's availability as one state, logged once per change: a line when it becomes unavailable
(naming what failed first), one when writes succeed again (with how long it lasted). The writer's retries,
the poller, handshakes and session ends all report here, so an outage is two log lines, not one per retry
or per session, and never a traceback (the reason is one line, without secrets: database.py)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("livegate.accounting")


class StoreOutage:
    def __init__(self) -> None:
        self.error: str | None = None  # the current outage's first reason; None while the store works
        self.since: float | None = None

    @property
    def down(self) -> bool:
        return self.error is not None

    def failed(self, during: str, exc: BaseException, consequence: str = "") -> None:
        """An operation (`during`) failed because the store is unavailable."""
        if self.error is None:
            self.error, self.since = str(exc) or type(exc).__name__, time.time()
            log.error("spend store unavailable (%s): %s%s", during, self.error,
                      f"; {consequence}" if consequence else "")

    def recovered(self, backlog: int = 0) -> None:
        """A write succeeded: the outage (if any) is over."""
        if self.error is not None:
            log.warning("spend store available again after %.1f s%s", time.time() - (self.since or time.time()),
                        f" ({backlog} queued rows still to write)" if backlog else "")
            self.error = self.since = None
