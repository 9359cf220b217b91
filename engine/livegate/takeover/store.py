"""The session state rows in the shared store (migration 3 of accounting/store.py), on SQLite or PostgreSQL.

One row per resumable session, keyed by the OpenAI session id (`sess_...`, what a reconnecting client sends
as `?session_id=`):

    token_hash  who opened it (Principal.opener): the key's hash ('' on an open gateway), or `secret:<hash>`
                for a client secret; only that opener (or the master key) may take over
    owner       the instance holding the session; `epoch` goes up by one at each take-over, and a write is
                applied only when owner and epoch still match (a fencing token: a former owner that lost the
                session can no longer overwrite it)
    status      live (a client is connected) | detached (its client dropped; the owner keeps it for
                reattach_grace_s) | claimed (another instance asked the owner to hand a detached session
                over) | released (the owner stored it and let go: drained, or handed over)
    state       the session's snapshot (translation/snapshot.py), sealed (takeover/seal.py): AES-GCM under a key
                the fleet shares, or on an open gateway plain JSON without the MCP tools' credentials
    missed      the client events a handed-over session's client did not get (JSON list of strings), sealed as state is

Instances heartbeat in `livegate_instances`; a row whose owner stopped heartbeating belongs to a dead
instance, and may be claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livegate.accounting.database import Database, Statement
from livegate.takeover.seal import Sealer, Unsealable
from livegate.translation.snapshot import Snapshot

LIVE, DETACHED, CLAIMED, RELEASED = "live", "detached", "claimed", "released"

_COLUMNS = "session_id, token_hash, model, owner, epoch, status, claimant, slot_id, state, missed, updated_at"
# A session's latest state, unless the row is another owner's (or epoch's) now: then no row comes back (fenced).
_UPSERT = (
    f"INSERT INTO livegate_session_state ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, $9, $10) "
    "ON CONFLICT (session_id) DO UPDATE SET status = CASE WHEN livegate_session_state.status = 'claimed' AND "
    "excluded.status <> 'released' THEN 'claimed' ELSE excluded.status END, slot_id = excluded.slot_id, "
    "state = excluded.state, missed = excluded.missed, updated_at = excluded.updated_at "
    "WHERE livegate_session_state.owner = excluded.owner AND livegate_session_state.epoch = excluded.epoch "
    "RETURNING session_id")


@dataclass(frozen=True)
class StateRow:
    """A session's row as the store holds it."""

    session_id: str
    token_hash: str
    model: str
    owner: str
    epoch: int
    status: str
    claimant: str | None
    slot_id: str | None
    state: dict[str, Any]  # the snapshot's JSON object ({} when it did not open)
    missed: list[str]
    updated_at: float
    unsealable: str | None = None  # why the state does not open here (then the session is not resumable)

    @classmethod
    def from_row(cls, row: dict[str, Any], sealer: Sealer) -> StateRow:
        bound = (row["session_id"], row["token_hash"], row["model"])
        state: dict[str, Any] = {}
        missed: list[str] = []
        unsealable = None
        try:
            state = sealer.open(row["state"], bound)
            missed = sealer.open_missed(row["missed"], bound) if row["missed"] else []
        except Unsealable as exc:
            state, unsealable = {}, str(exc)
        return cls(row["session_id"], row["token_hash"], row["model"], row["owner"], int(row["epoch"]),
                   row["status"], row["claimant"], row["slot_id"], state, missed, float(row["updated_at"]),
                   unsealable)


@dataclass(frozen=True)
class Write:
    """One session's latest state, as its owner writes it (encoded here, in the writer's task)."""

    session_id: str
    token_hash: str
    model: str
    owner: str
    epoch: int
    status: str
    slot_id: str | None
    snapshot: Snapshot
    missed: list[str] | None = None
    routine: bool = False  # a newer state of a live session already stored: may wait for the writer's gathering

    @property
    def row(self) -> tuple[str, str, str]:
        """What the sealed state is bound to: it opens in this session's row of this key and model only."""
        return self.session_id, self.token_hash, self.model


@dataclass(frozen=True)
class Delete:
    """The session ended: its row goes (if its owner still holds it)."""

    session_id: str
    owner: str
    epoch: int


class SessionStateStore:
    def __init__(self, db: Database, sealer: Sealer) -> None:
        self.db = db
        self.sealer = sealer

    async def apply(self, ops: list[Write | Delete], now: float) -> list[str]:
        """Write and delete rows in one transaction; returns the session ids whose write was fenced off (the
        row is another owner's now, or another epoch's)."""
        sealed = {id(op): (self.sealer.seal(op.snapshot, op.row),
                           self.sealer.seal_missed(op.missed, op.row) if op.missed else None)
                  for op in ops if isinstance(op, Write)}
        statements: list[Statement] = []
        for op in ops:
            if isinstance(op, Delete):
                statements.append(("DELETE FROM livegate_session_state WHERE session_id = $1 AND owner = $2 "
                                   "AND epoch = $3", (op.session_id, op.owner, op.epoch)))
                continue
            # A claim waiting for the owner (status claimed) stays until the owner releases the session.
            statements.append((_UPSERT, (op.session_id, op.token_hash, op.model, op.owner, op.epoch, op.status,
                                         op.slot_id, *sealed[id(op)], now)))
        results = await self.db.batch(statements)
        return [op.session_id for op, rows in zip(ops, results, strict=True) if isinstance(op, Write) and not rows]

    async def load(self, session_id: str) -> StateRow | None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_COLUMNS} FROM livegate_session_state WHERE session_id = $1", session_id)
        return StateRow.from_row(rows[0], self.sealer) if rows else None

    async def claim(self, row: StateRow, claimant: str, now: float) -> StateRow | None:
        """Take the session over as it is in `row` (same owner, epoch and status): the claimant owns it at the
        next epoch. None when someone else changed it first (one of two racing clients wins)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE livegate_session_state SET owner = $2, epoch = epoch + 1, status = 'live', claimant = NULL, "
                f"updated_at = $3 WHERE session_id = $1 AND owner = $4 AND epoch = $5 AND status = $6 "
                f"RETURNING {_COLUMNS}", row.session_id, claimant, now, row.owner, row.epoch, row.status)
        return StateRow.from_row(rows[0], self.sealer) if rows else None

    async def ask_handover(self, row: StateRow, claimant: str, now: float) -> bool:
        """Ask the live owner of a detached session to hand it over (it stores and releases it)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "UPDATE livegate_session_state SET status = 'claimed', claimant = $2, updated_at = $3 "
                "WHERE session_id = $1 AND owner = $4 AND epoch = $5 AND status = 'detached' RETURNING session_id",
                row.session_id, claimant, now, row.owner, row.epoch)
        return bool(rows)

    async def claims_on(self, owner: str) -> list[str]:
        """The sessions of `owner` another instance asked for."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT session_id FROM livegate_session_state WHERE owner = $1 AND status = "
                                  "'claimed'", owner)
        return [row["session_id"] for row in rows]

    # --- instances ---------------------------------------------------------------------------------------

    async def heartbeat(self, instance_id: str, now: float, draining: bool) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("INSERT INTO livegate_instances (instance_id, heartbeat_at, draining) VALUES ($1, $2, $3) "
                             "ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
                             "draining = excluded.draining", instance_id, now, int(draining))

    async def last_seen(self, instance_id: str) -> float | None:
        """When the instance last heartbeat (None: it never did, or said goodbye)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT heartbeat_at FROM livegate_instances WHERE instance_id = $1", instance_id)
        return float(rows[0]["heartbeat_at"]) if rows else None

    async def goodbye(self, instance_id: str) -> None:
        """The instance stopped: what it still owns may be claimed at once."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM livegate_instances WHERE instance_id = $1", instance_id)

    async def sweep(self, before: float) -> None:
        """Forget sessions nobody can take over any more: released before `before`, or owned by an instance
        silent since then."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM livegate_session_state WHERE (status = 'released' AND updated_at < $1) OR "
                "(status <> 'released' AND NOT EXISTS (SELECT 1 FROM livegate_instances i WHERE "
                "i.instance_id = livegate_session_state.owner AND i.heartbeat_at >= $1))", before)
            await tx.execute("DELETE FROM livegate_instances WHERE heartbeat_at < $1", before - 86400)
