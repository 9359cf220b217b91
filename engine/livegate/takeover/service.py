"""One gateway process's part in keeping sessions alive across processes (see takeover/__init__.py).

`Takeover` heartbeats this instance, writes sessions' state in the background (`Keeper`, one per session),
claims a stored session for a client that reconnects here (`claim`), hands a detached session over when
another instance asks for it, and drains the process (`drain`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

from livegate.accounting.database import Database, StoreUnavailable
from livegate.close_codes import Refusal
from livegate.takeover.drain import DrainOnSigterm
from livegate.takeover.seal import Sealer
from livegate.takeover.store import CLAIMED, DETACHED, LIVE, RELEASED, Delete, SessionStateStore, StateRow, Write
from livegate.takeover.writer import StateWriter
from livegate.translation.snapshot import Snapshot

if TYPE_CHECKING:
    from livegate.accounting.gate import Principal

log = logging.getLogger("livegate.takeover")

HEARTBEAT_S = 1.0  # how often an instance says it is alive
STALE_S = 4.0  # an instance silent this long is dead: the sessions it held may be claimed
POLL_S = 0.1  # how often a claim waiting for an owner looks again
CLAIMS_POLL_S = 0.25  # how often an instance with detached sessions looks for claims on them
SWEEP_S = 15.0  # how often rows nobody can take over any more are deleted
RELEASE_TIMEOUT_S = 5.0  # how long a drained session waits for its state to be written before closing anyway

DRAINING = Refusal(503, "This livegate instance is shutting down; reconnect and another instance serves you.",
                   "server_draining", denial=True)


def not_found(session_id: str) -> Refusal:
    return Refusal(404, f"No session '{session_id[:64]}' is waiting for its client (it ended, or its reattach "
                        "grace period passed).", "session_not_found")


def in_use(session_id: str) -> Refusal:
    return Refusal(409, f"The session '{session_id[:64]}' is held by another client connection.", "session_in_use")


class Drainable(Protocol):
    """A live session as the drain sees it (server/realtime.py's RealtimeSession)."""

    async def drain(self, deadline: float) -> None: ...

    def taken_over(self) -> None: ...


class Takeover:
    def __init__(self, db: Database, instance_id: str, *, grace_s: float, drain_timeout_s: float,
                 sealer: Sealer) -> None:
        self.store = SessionStateStore(db, sealer)
        self.instance_id = instance_id
        self.grace_s = grace_s
        self.drain_timeout_s = drain_timeout_s
        self.enabled = grace_s > 0  # sessions are stored for another instance only when clients may come back
        self.draining = False
        self.writer = StateWriter(self.store, on_fenced=self._fenced)
        self.live: dict[Drainable, Keeper | None] = {}  # this process's sessions, drained on SIGTERM
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sweep = 0.0
        self._sigterm: DrainOnSigterm | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._sigterm = DrainOnSigterm.install(self.drain)  # SIGTERM drains first (takeover/drain.py)
        if not self.enabled:
            return
        if not self.store.sealer.keyed:
            log.info("open gateway (no master key, no LIVEGATE_SALT_KEY): stored sessions carry no MCP credentials; "
                     "their MCP tool calls fail after a take-over until the client sends the tools again")
        try:
            await self.store.heartbeat(self.instance_id, time.time(), False)
        except StoreUnavailable as exc:
            log.error("session store unavailable at start; sessions are stored once it answers: %s", exc)
        self.writer.start()
        self._tasks = [asyncio.create_task(self._heartbeats(), name="livegate-instance-heartbeat"),
                       asyncio.create_task(self._watch_claims(), name="livegate-session-claims")]

    async def stop(self) -> None:
        if self._sigterm is not None:
            self._sigterm.uninstall()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if not self.enabled:
            return
        await self.writer.stop()
        with contextlib.suppress(StoreUnavailable):
            await self.store.goodbye(self.instance_id)

    async def _heartbeats(self) -> None:
        while True:
            now = time.time()
            try:
                await self.store.heartbeat(self.instance_id, now, self.draining)
                if now - self._last_sweep >= SWEEP_S:
                    self._last_sweep = now
                    await self.store.sweep(now - self.grace_s - STALE_S)
            except StoreUnavailable as exc:
                log.debug("instance heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_S)

    async def _watch_claims(self) -> None:
        """Another instance asked for one of this instance's detached sessions: it is handed over (stored and
        released at its next rest, like a drain of that one session)."""
        while True:
            await asyncio.sleep(CLAIMS_POLL_S)
            detached = {k.session_id: s for s, k in self.live.items() if k is not None and k.status == DETACHED}
            if not detached:
                continue
            try:
                claimed = await self.store.claims_on(self.instance_id)
            except StoreUnavailable:
                continue
            for session_id in claimed:
                session = detached.get(session_id)
                if session is not None:
                    log.info("session %s: another instance asked for it; handing it over", session_id)
                    await session.drain(time.monotonic() + self.drain_timeout_s)

    def _fenced(self, session_id: str) -> None:
        """Another instance owns the session now (this one was taken for dead): this copy ends."""
        for session, keeper in list(self.live.items()):
            if keeper is not None and keeper.session_id == session_id and not keeper.released:
                keeper.lost = True
                session.taken_over()

    # --- sessions ----------------------------------------------------------------------------------------

    def keeper(self, token_hash: str, model: str, slot_id: str | None, epoch: int = 0) -> Keeper | None:
        """The store handle of a new (or taken over, at `epoch`) session; None when nothing is stored."""
        return Keeper(self, token_hash, model, slot_id, epoch) if self.enabled else None

    def attach(self, session: Drainable, keeper: Keeper | None) -> None:
        self.live[session] = keeper

    def detach(self, session: Drainable) -> None:
        self.live.pop(session, None)

    async def drain(self) -> None:
        """SIGTERM: refuse new sessions (DRAINING), close each live one at its next rest (1012) after storing
        it, at the latest after drain_timeout_s; returns when they all ended (or a little after that)."""
        if self.draining:
            return
        self.draining = True
        log.info("draining %d sessions (at most %.0f s)", len(self.live), self.drain_timeout_s)
        if self.enabled:
            with contextlib.suppress(StoreUnavailable):
                await self.store.heartbeat(self.instance_id, time.time(), True)
        deadline = time.monotonic() + self.drain_timeout_s
        for session in list(self.live):
            await session.drain(deadline)
        limit = deadline + RELEASE_TIMEOUT_S + 2.0
        while self.live and time.monotonic() < limit:
            await asyncio.sleep(0.05)
        if self.live:
            log.warning("%d sessions did not end within the drain", len(self.live))

    # --- taking a session over ---------------------------------------------------------------------------

    async def claim(self, session_id: str, who: Principal, model: str) -> StateRow | Refusal:
        """Take the stored session over for this instance: it was released (drained, handed over), or its
        owner is dead, or its owner hands it over (detached there). Only the key or client secret that opened
        it (Principal.opener) or the master key may; of two clients racing, one wins and the other is refused
        (session_in_use)."""
        if not self.enabled:
            return not_found(session_id)
        started = time.monotonic()
        first_seen: float | None = None
        asked = False
        while True:
            try:
                row = await self.store.load(session_id)
                if row is None or row.model != model or (
                        not (who.kind == "master" and who.secret is None) and who.opener != row.token_hash):
                    return not_found(session_id)  # another key's session is not found either: ids are not probed
                if row.unsealable is not None:  # as unknown: a row this fleet cannot open resumes nothing
                    log.warning("session %s: its stored state cannot be opened here, so it is not resumable: %s",
                                session_id, row.unsealable)
                    return not_found(session_id)
                if row.status == RELEASED:
                    claimed = await self.store.claim(row, self.instance_id, time.time())
                    if claimed is not None:
                        return claimed
                    continue  # someone changed it first: look again
                if row.owner == self.instance_id:
                    return in_use(session_id)  # held here, its client connected (a detached one was found first)
                seen = await self.store.last_seen(row.owner)
                now = time.time()
                if seen is None or now - seen > STALE_S:  # its owner is dead
                    claimed = await self.store.claim(row, self.instance_id, now)
                    if claimed is not None:
                        log.info("session %s: taken over from a silent instance", session_id)
                        return claimed
                    continue
                if row.status == DETACHED and not asked:
                    asked = await self.store.ask_handover(row, self.instance_id, now)
                    continue
                if row.status == CLAIMED and row.claimant == self.instance_id:
                    if time.monotonic() - started > self.drain_timeout_s + RELEASE_TIMEOUT_S:
                        return in_use(session_id)
                elif row.status == LIVE:
                    if first_seen is None:
                        first_seen = seen
                    elif seen > first_seen:
                        return in_use(session_id)  # its owner is alive, and so is its client
                else:
                    return in_use(session_id)
            except StoreUnavailable as exc:
                log.error("session store unavailable at a take-over: %s", exc)
                return Refusal(503, "The session store is unavailable; try again shortly.", "store_unavailable")
            await asyncio.sleep(POLL_S)


class Keeper:
    """One session's rows in the store, as its owner writes them (off the audio path, through the writer)."""

    def __init__(self, service: Takeover, token_hash: str, model: str, slot_id: str | None, epoch: int) -> None:
        self.service = service
        self.token_hash, self.model, self.slot_id, self.epoch = token_hash, model, slot_id, epoch
        self.session_id = ""
        self.status = LIVE
        self.released = False
        self.lost = False  # another instance took the session over: nothing more is written
        self._latest: Snapshot | None = None
        self._queued_status: str | None = None  # the status of the last state queued

    def store(self, snapshot: Snapshot) -> None:
        """Queue the session's latest state; returns at once."""
        self._latest = snapshot
        if snapshot.session_id and not self.released and not self.lost:
            # only a live session's next checkpoint waits for the writer's gathering: its first row and a
            # change of status (the client away or back) are what another instance acts on at once
            routine = self.session_id == snapshot.session_id and self.status == self._queued_status == LIVE
            self.session_id, self._queued_status = snapshot.session_id, self.status
            self.service.writer.put(self._write(snapshot, self.status, routine=routine))

    async def release(self, snapshot: Snapshot, missed: list[str] | None) -> bool:
        """Write the session's state as released (with the events its client missed) and wait for it: another
        instance may take it over from now on."""
        if not snapshot.session_id or self.lost:
            return False
        self.session_id, self._latest = snapshot.session_id, snapshot
        self.released = True
        write = self._write(snapshot, RELEASED, missed)
        stored = await self.service.writer.write(write, RELEASE_TIMEOUT_S)
        if not stored:
            log.error("session %s: its state could not be stored; it cannot be taken over", self.session_id)
        return stored

    def away(self, away: bool) -> None:
        """The client dropped (True: the session waits for it here, reattach_grace_s, or for another
        instance) or came back (False)."""
        self._set_status(DETACHED if away else LIVE)

    def ended(self) -> None:
        """The session is over here: its row goes, unless it was released for another instance."""
        if self.session_id and not self.released and not self.lost:
            self.service.writer.put(Delete(self.session_id, self.service.instance_id, self.epoch))

    def _set_status(self, status: str) -> None:
        self.status = status
        if self._latest is not None:
            self.store(self._latest)

    def _write(self, snapshot: Snapshot, status: str, missed: list[str] | None = None, *,
               routine: bool = False) -> Write:
        return Write(snapshot.session_id, self.token_hash, self.model, self.service.instance_id, self.epoch, status,
                     self.slot_id, snapshot, missed, routine)
