"""Every budget and limit a session falls under, in one place: its key's, its key's team's and its key's
user's. Admission (gate.Grant.check_admission), the mid-session checks (Grant.check_budget, check_key)
and the spend charges (Grant.usage_changed) all go through `Limits`; budget reservations (issue 24) belong
here too.

Each owner of a budget is a `Scope`: a key (its SHA-256), a team (`team_id`) or a user (`user_id`), with
the record holding its settings (models, max_budget, rpm_limit, max_parallel_requests,
max_session_seconds, blocked). A session is admitted only when every scope allows its model, has budget
left and has room under its limits; its spend is charged to every scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("key", "team", "user")
# `models` entries meaning "no restriction at this level" (LiteLLM's spellings). all-team-models on a key
# leaves the choice to its team.
UNRESTRICTED = frozenset({"*", "all-proxy-models", "all-team-models"})
# the livegate_sessions column counting each kind's live sessions, and back
SESSION_COLUMNS = {"key": "token_hash", "team": "team_id", "user": "user_id"}
SESSION_COLUMN_KINDS = {column: kind for kind, column in SESSION_COLUMNS.items()}


def account_of(kind: str, ident: str) -> str:
    """The spend account of a scope, as the writer queues spend: a key's hash, `team:<id>`, `user:<id>`."""
    return ident if kind == "key" else f"{kind}:{ident}"


def split_account(account: str) -> tuple[str, str]:
    """(kind, id) of a spend account. Key hashes are hex, so a `:` marks a team or user."""
    kind, sep, ident = account.partition(":")
    return (kind, ident) if sep and kind in ("team", "user") else ("key", account)


def allows_model(models: list[str], names: Iterable[str | None]) -> bool:
    """Is one of `names` (client model name, upstream id) in `models` (empty or a wildcard entry: all)?"""
    if not models or UNRESTRICTED.intersection(models):
        return True
    return any(name in models for name in names if name)


@dataclass(frozen=True)
class Scope:
    kind: str  # "key" | "team" | "user"
    ident: str  # token hash, team_id, user_id
    record: Any  # KeyRecord | TeamRecord | UserRecord (owners.py)

    @property
    def account(self) -> str:
        return account_of(self.kind, self.ident)

    @property
    def name(self) -> str:
        """How messages name it: "the key", "team 'eng'", "user 'bob'" (never a key or its hash)."""
        if self.kind == "key":
            return "the key"
        alias = getattr(self.record, f"{self.kind}_alias", None)
        return f"{self.kind} '{alias or self.ident}'"

    @property
    def capitalized(self) -> str:
        """`name` at the start of a sentence (ids keep their case)."""
        return self.name[0].upper() + self.name[1:]

    def setting(self, name: str) -> Any:
        return getattr(self.record, name, None)


@dataclass(frozen=True)
class Limits:
    scopes: tuple[Scope, ...] = ()

    @classmethod
    def of(cls, key: Any, team: Any = None, user: Any = None) -> Limits:
        scopes = []
        if key is not None:
            scopes.append(Scope("key", key.token_hash, key))
        if team is not None:
            scopes.append(Scope("team", team.team_id, team))
        if user is not None:
            scopes.append(Scope("user", user.user_id, user))
        return cls(tuple(scopes))

    def allows(self, *names: str | None) -> bool:
        return all(allows_model(scope.setting("models") or [], names) for scope in self.scopes)

    def refusing_model(self, *names: str | None) -> Scope | None:
        """The first scope whose `models` exclude every one of `names`."""
        return next((s for s in self.scopes if not allows_model(s.setting("models") or [], names)), None)

    def blocked(self) -> Scope | None:
        return next((s for s in self.scopes if s.setting("blocked")), None)

    def budgeted(self) -> bool:
        return any(s.setting("max_budget") is not None for s in self.scopes)

    def exhausted(self, spend_of: Callable[[Scope], float]) -> tuple[Scope, float] | None:
        """The first scope whose spend has reached its max_budget, with that spend."""
        for scope in self.scopes:
            budget = scope.setting("max_budget")
            if budget is not None:
                spend = spend_of(scope)
                if spend >= budget:
                    return scope, spend
        return None

    def rate_limits(self) -> list[tuple[Scope, int]]:
        return [(s, s.setting("rpm_limit")) for s in self.scopes if s.setting("rpm_limit") is not None]

    def session_limits(self) -> list[tuple[str, str, int | None]]:
        """(column of livegate_sessions, value, max_parallel_requests) for the store's slot count."""
        return [(SESSION_COLUMNS[s.kind], s.ident, s.setting("max_parallel_requests")) for s in self.scopes]

    def max_session_seconds(self) -> float | None:
        limits = [s.setting("max_session_seconds") for s in self.scopes if s.setting("max_session_seconds")]
        return min(limits) if limits else None

    def scope(self, kind: str) -> Scope | None:
        return next((s for s in self.scopes if s.kind == kind), None)
