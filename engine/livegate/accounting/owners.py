"""Teams and users, the owners of keys (LiteLLM's names): each has its own models, budget (with
`budget_duration` periods), limits and spend; a key belongs to at most one team and one user. Team
membership (`members_with_roles`) is a table of its own. Stored next to the keys (store.py, migration 2).

Deleting a team or a user deletes its keys (as LiteLLM does): a key must not outlive the budget it was
given under.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from livegate.accounting.database import Database, Tx
from livegate.accounting.periods import params as _params
from livegate.accounting.periods import reset_due_budgets

# Settings a team or user shares with keys (the budgeted fields), then each one's own.
SHARED_FIELDS = ("models", "max_budget", "budget_duration", "budget_reset_at", "max_parallel_requests", "rpm_limit",
                 "max_session_seconds", "metadata", "spend")
TEAM_FIELDS = ("team_alias", *SHARED_FIELDS, "tags", "blocked")
USER_FIELDS = ("user_alias", "user_email", *SHARED_FIELDS)
_JSON = {"models": list, "metadata": dict, "tags": list}
ROLES = ("admin", "user")


@dataclass
class TeamRecord:
    team_id: str
    team_alias: str | None = None
    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    spend: float = 0.0
    budget_duration: str | None = None
    budget_reset_at: float | None = None
    max_parallel_requests: int | None = None
    rpm_limit: int | None = None
    max_session_seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    blocked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TeamRecord:
        values = _decoded(row)
        values["blocked"] = bool(values.get("blocked"))
        return cls(**values)


@dataclass
class UserRecord:
    user_id: str
    user_alias: str | None = None
    user_email: str | None = None
    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    spend: float = 0.0
    budget_duration: str | None = None
    budget_reset_at: float | None = None
    max_parallel_requests: int | None = None
    rpm_limit: int | None = None
    max_session_seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserRecord:
        return cls(**_decoded(row))


@dataclass(frozen=True)
class Member:
    team_id: str
    user_id: str
    role: str
    created_at: float


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    values = dict(row)
    for name, kind in _JSON.items():
        if name in values:
            values[name] = json.loads(values[name]) if values[name] else kind()
    return values


def _encoded(name: str, value: Any) -> Any:
    if name in _JSON:
        return json.dumps(value if value is not None else _JSON[name]())
    if name == "blocked":
        return int(bool(value))
    return value


class OwnerStore:
    """Teams, users and memberships (mixed into store.Store, which brings `db`)."""

    db: Database

    # --- teams ---------------------------------------------------------------------------------------------

    async def create_team(self, team: TeamRecord, members: list[tuple[str, str]], now: float) -> None:
        """Insert a team and its members ((user_id, role); the users exist)."""
        async with self.db.transaction() as tx:
            await _insert(tx, "livegate_teams", {"team_id": team.team_id, **_row(team, TEAM_FIELDS),
                                                 "created_at": team.created_at, "updated_at": team.updated_at})
            await _add_members(tx, team.team_id, members, now)

    async def get_teams(self, team_ids: list[str], now: float) -> dict[str, TeamRecord]:
        rows = await self._get("livegate_teams", "team_id", team_ids, now)
        return {row["team_id"]: TeamRecord.from_row(row) for row in rows}

    async def get_team(self, team_id: str, now: float) -> TeamRecord | None:
        return (await self.get_teams([team_id], now)).get(team_id)

    async def update_team(self, team_id: str, changes: dict[str, Any], now: float) -> TeamRecord | None:
        row = await self._update("livegate_teams", "team_id", team_id, TEAM_FIELDS, changes, now)
        return TeamRecord.from_row(row) if row else None

    async def list_teams(self, now: float, user_id: str | None = None) -> list[TeamRecord]:
        """Every team (oldest first), or the teams `user_id` is a member of."""
        async with self.db.transaction() as tx:
            await reset_due_budgets(tx, "livegate_teams", "team_id", None, now)
            if user_id is None:
                rows = await tx.fetch("SELECT * FROM livegate_teams ORDER BY created_at, team_id")
            else:
                rows = await tx.fetch("SELECT t.* FROM livegate_teams t JOIN livegate_team_members m ON "
                                      "m.team_id = t.team_id WHERE m.user_id = $1 ORDER BY t.created_at, t.team_id",
                                      user_id)
        return [TeamRecord.from_row(row) for row in rows]

    async def delete_teams(self, team_ids: list[str], now: float) -> tuple[list[str], list[str]]:
        """Delete teams, their memberships and their keys; (deleted team ids, deleted key hashes)."""
        return await self._delete_owners("livegate_teams", "team_id", team_ids, now)

    async def members(self, team_id: str) -> list[Member]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM livegate_team_members WHERE team_id = $1 ORDER BY created_at, "
                                  "user_id", team_id)
        return [Member(**row) for row in rows]

    async def add_members(self, team_id: str, members: list[tuple[str, str]], now: float) -> None:
        """Add (or change the role of) members; the team and users exist."""
        async with self.db.transaction() as tx:
            await _add_members(tx, team_id, members, now)

    async def remove_members(self, team_id: str, user_ids: list[str]) -> list[str]:
        if not user_ids:
            return []
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"DELETE FROM livegate_team_members WHERE team_id = $1 AND user_id IN "
                                  f"({_params(len(user_ids), 2)}) RETURNING user_id", team_id, *user_ids)
        return [row["user_id"] for row in rows]

    # --- users ---------------------------------------------------------------------------------------------

    async def create_user(self, user: UserRecord, teams: list[tuple[str, str]], now: float) -> None:
        """Insert a user and its memberships ((team_id, role); the teams exist)."""
        async with self.db.transaction() as tx:
            await _insert(tx, "livegate_users", {"user_id": user.user_id, **_row(user, USER_FIELDS),
                                                 "created_at": user.created_at, "updated_at": user.updated_at})
            for team_id, role in teams:
                await _add_members(tx, team_id, [(user.user_id, role)], now)

    async def get_users(self, user_ids: list[str], now: float) -> dict[str, UserRecord]:
        rows = await self._get("livegate_users", "user_id", user_ids, now)
        return {row["user_id"]: UserRecord.from_row(row) for row in rows}

    async def get_user(self, user_id: str, now: float) -> UserRecord | None:
        return (await self.get_users([user_id], now)).get(user_id)

    async def update_user(self, user_id: str, changes: dict[str, Any], now: float) -> UserRecord | None:
        row = await self._update("livegate_users", "user_id", user_id, USER_FIELDS, changes, now)
        return UserRecord.from_row(row) if row else None

    async def list_users(self, now: float) -> list[UserRecord]:
        async with self.db.transaction() as tx:
            await reset_due_budgets(tx, "livegate_users", "user_id", None, now)
            rows = await tx.fetch("SELECT * FROM livegate_users ORDER BY created_at, user_id")
        return [UserRecord.from_row(row) for row in rows]

    async def memberships(self, user_id: str) -> list[Member]:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM livegate_team_members WHERE user_id = $1 ORDER BY created_at, "
                                  "team_id", user_id)
        return [Member(**row) for row in rows]

    async def delete_users(self, user_ids: list[str], now: float) -> tuple[list[str], list[str]]:
        """Delete users, their memberships and their keys; (deleted user ids, deleted key hashes)."""
        return await self._delete_owners("livegate_users", "user_id", user_ids, now)

    # --- shared --------------------------------------------------------------------------------------------

    async def _get(self, table: str, column: str, ids: list[str], now: float) -> list[dict[str, Any]]:
        ids = sorted(set(ids))
        if not ids:
            return []
        async with self.db.transaction() as tx:
            await reset_due_budgets(tx, table, column, ids, now)
            return await tx.fetch(f"SELECT * FROM {table} WHERE {column} IN ({_params(len(ids))})", *ids)

    async def _update(self, table: str, column: str, ident: str, allowed: tuple[str, ...], changes: dict[str, Any],
                      now: float) -> dict[str, Any] | None:
        sets: list[str] = []
        args: list[Any] = [ident]
        for name, value in changes.items():
            if name not in allowed:
                raise ValueError(f"not a {table} field: {name}")
            args.append(_encoded(name, value))
            sets.append(f"{name} = ${len(args)}")
        args.append(now)
        sets.append(f"updated_at = ${len(args)}")
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"UPDATE {table} SET {', '.join(sets)} WHERE {column} = $1 RETURNING *", *args)
        return rows[0] if rows else None

    async def _delete_owners(self, table: str, column: str, ids: list[str], now: float) -> tuple[list[str], list[str]]:
        ids = sorted(set(ids))
        if not ids:
            return [], []
        async with self.db.transaction() as tx:
            deleted = [row[column] for row in await tx.fetch(
                f"DELETE FROM {table} WHERE {column} IN ({_params(len(ids))}) RETURNING {column}", *ids)]
            if not deleted:
                return [], []
            marks = _params(len(deleted), 2)
            await tx.execute(f"DELETE FROM livegate_team_members WHERE {column} IN ({_params(len(deleted))})",
                             *deleted)
            keys = await tx.fetch(f"UPDATE livegate_keys SET deleted_at = $1 WHERE deleted_at IS NULL AND "
                                  f"{column} IN ({marks}) RETURNING token_hash", now, *deleted)
        return deleted, [row["token_hash"] for row in keys]


def _row(record: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _encoded(name, getattr(record, name)) for name in names}


async def _insert(tx: Tx, table: str, values: dict[str, Any]) -> None:
    names = list(values)
    await tx.execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({_params(len(names))})",
                     *(values[name] for name in names))


async def _add_members(tx: Tx, team_id: str, members: list[tuple[str, str]], now: float) -> None:
    for user_id, role in members:
        await tx.execute("INSERT INTO livegate_team_members (team_id, user_id, role, created_at) VALUES "
                         "($1, $2, $3, $4) ON CONFLICT (team_id, user_id) DO UPDATE SET role = $3",
                         team_id, user_id, role, now)
