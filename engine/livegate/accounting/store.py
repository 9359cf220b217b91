"""The spend store: keys, client secrets, spend logs, live sessions and rate windows, on SQLite or
PostgreSQL (database.py), with the same schema and versioned migrations applied at start. Teams and users
(owners.py) and spend reports (reports.py) are the store's too.

Times are UNIX seconds (float); JSON fields are text; flags are INTEGER 0/1 (the same on both databases).
Keys and secrets are stored as SHA-256 hashes only.

Spend is charged to accounts: a key's account is its hash, a team's `team:<team_id>`, a user's
`user:<user_id>` (limits.account_of); the writer queues spend by account and `write_batch` adds it.
A regenerated key leaves a tombstone row (deleted, `regenerated_to` the new hash): spend and spend rows
still arriving under the old hash land on the new key.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from livegate.accounting.database import Database, Tx
from livegate.accounting.owners import OwnerStore
from livegate.accounting.periods import reset_due_budgets

STALE_SESSION_SECONDS = 30.0  # a session row not refreshed for this long belongs to a dead instance

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE livegate_keys (
            token_hash TEXT PRIMARY KEY,
            key_name TEXT,
            key_alias TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            max_budget DOUBLE PRECISION,
            spend DOUBLE PRECISION NOT NULL DEFAULT 0,
            budget_duration TEXT,
            budget_reset_at DOUBLE PRECISION,
            expires DOUBLE PRECISION,
            max_parallel_requests INTEGER,
            rpm_limit INTEGER,
            max_session_seconds DOUBLE PRECISION,
            metadata TEXT NOT NULL DEFAULT '{}',
            tags TEXT NOT NULL DEFAULT '[]',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            deleted_at DOUBLE PRECISION
        )""",
        """CREATE TABLE livegate_client_secrets (
            secret_hash TEXT PRIMARY KEY,
            token_hash TEXT,
            expires_at DOUBLE PRECISION NOT NULL,
            session TEXT,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE livegate_spend_logs (
            request_id TEXT PRIMARY KEY,
            api_key TEXT NOT NULL DEFAULT '',
            key_alias TEXT,
            model TEXT,
            upstream_model TEXT,
            route TEXT,
            call_type TEXT,
            start_time DOUBLE PRECISION NOT NULL,
            end_time DOUBLE PRECISION NOT NULL,
            status TEXT,
            close_code INTEGER,
            spend DOUBLE PRECISION,
            prompt_tokens BIGINT NOT NULL DEFAULT 0,
            completion_tokens BIGINT NOT NULL DEFAULT 0,
            total_tokens BIGINT NOT NULL DEFAULT 0,
            input_text_tokens BIGINT NOT NULL DEFAULT 0,
            input_audio_tokens BIGINT NOT NULL DEFAULT 0,
            input_image_tokens BIGINT NOT NULL DEFAULT 0,
            input_video_tokens BIGINT NOT NULL DEFAULT 0,
            input_cached_tokens BIGINT NOT NULL DEFAULT 0,
            output_text_tokens BIGINT NOT NULL DEFAULT 0,
            output_audio_tokens BIGINT NOT NULL DEFAULT 0,
            output_thinking_tokens BIGINT NOT NULL DEFAULT 0,
            request_tags TEXT NOT NULL DEFAULT '[]',
            end_user TEXT,
            metadata TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX livegate_spend_logs_key_time ON livegate_spend_logs (api_key, start_time)",
        "CREATE INDEX livegate_spend_logs_time ON livegate_spend_logs (start_time)",
        """CREATE TABLE livegate_sessions (
            session_id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            model TEXT,
            route TEXT,
            started_at DOUBLE PRECISION NOT NULL,
            heartbeat_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX livegate_sessions_key ON livegate_sessions (token_hash, heartbeat_at)",
        """CREATE TABLE livegate_rate_windows (
            token_hash TEXT NOT NULL,
            window_start BIGINT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (token_hash, window_start)
        )""",
    ]),
    # Teams and users owning keys (issue 20); key blocks and regeneration; team and user on spend rows and
    # live sessions (reports, limits); an administrator's request to end a session on another instance.
    (2, [
        "ALTER TABLE livegate_keys ADD COLUMN team_id TEXT",
        "ALTER TABLE livegate_keys ADD COLUMN user_id TEXT",
        "ALTER TABLE livegate_keys ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE livegate_keys ADD COLUMN regenerated_to TEXT",
        "CREATE INDEX livegate_keys_team ON livegate_keys (team_id)",
        "CREATE INDEX livegate_keys_user ON livegate_keys (user_id)",
        """CREATE TABLE livegate_teams (
            team_id TEXT PRIMARY KEY,
            team_alias TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            max_budget DOUBLE PRECISION,
            spend DOUBLE PRECISION NOT NULL DEFAULT 0,
            budget_duration TEXT,
            budget_reset_at DOUBLE PRECISION,
            max_parallel_requests INTEGER,
            rpm_limit INTEGER,
            max_session_seconds DOUBLE PRECISION,
            metadata TEXT NOT NULL DEFAULT '{}',
            tags TEXT NOT NULL DEFAULT '[]',
            blocked INTEGER NOT NULL DEFAULT 0,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE livegate_users (
            user_id TEXT PRIMARY KEY,
            user_alias TEXT,
            user_email TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            max_budget DOUBLE PRECISION,
            spend DOUBLE PRECISION NOT NULL DEFAULT 0,
            budget_duration TEXT,
            budget_reset_at DOUBLE PRECISION,
            max_parallel_requests INTEGER,
            rpm_limit INTEGER,
            max_session_seconds DOUBLE PRECISION,
            metadata TEXT NOT NULL DEFAULT '{}',
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE livegate_team_members (
            team_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            role TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (team_id, user_id)
        )""",
        "CREATE INDEX livegate_team_members_user ON livegate_team_members (user_id)",
        "ALTER TABLE livegate_spend_logs ADD COLUMN team_id TEXT",
        "ALTER TABLE livegate_spend_logs ADD COLUMN user_id TEXT",
        "ALTER TABLE livegate_sessions ADD COLUMN team_id TEXT",
        "ALTER TABLE livegate_sessions ADD COLUMN user_id TEXT",
        "ALTER TABLE livegate_sessions ADD COLUMN stop_requested INTEGER NOT NULL DEFAULT 0",
    ]),
    (3, [  # sessions that outlive the process (livegate/takeover/store.py reads and writes these)
        """CREATE TABLE livegate_session_state (
            session_id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            owner TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            status TEXT NOT NULL,
            claimant TEXT,
            slot_id TEXT,
            state TEXT NOT NULL,
            missed TEXT,
            updated_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX livegate_session_state_owner ON livegate_session_state (owner, status)",
        """CREATE TABLE livegate_instances (
            instance_id TEXT PRIMARY KEY,
            heartbeat_at DOUBLE PRECISION NOT NULL,
            draining INTEGER NOT NULL DEFAULT 0
        )""",
    ]),
    (4, [  # spill files written at the next start exactly once (spill.py)
        """CREATE TABLE livegate_spill_replays (
            spill_id TEXT PRIMARY KEY,
            replayed_at DOUBLE PRECISION NOT NULL
        )""",
    ]),
    # Session transcripts, kept when general_settings.store_prompts_in_spend_logs is on (issue 22): redacted
    # JSON (observability/transcripts.py), one row per spend row that has one. The OpenAI session id (sess_...)
    # on spend rows, so /spend/logs/{session} finds a session by the id its client knows.
    (5, [
        "ALTER TABLE livegate_spend_logs ADD COLUMN session_id TEXT",
        "CREATE INDEX livegate_spend_logs_session ON livegate_spend_logs (session_id)",
        """CREATE TABLE livegate_transcripts (
            request_id TEXT PRIMARY KEY,
            transcript TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
    ]),
]

KEY_FIELDS = ("key_alias", "models", "max_budget", "budget_duration", "expires", "max_parallel_requests",
              "rpm_limit", "max_session_seconds", "metadata", "tags", "team_id", "user_id", "blocked")
_JSON_KEY_FIELDS = ("models", "metadata", "tags")
SPEND_TOKEN_COLUMNS = ("input_text", "input_audio", "input_image", "input_video", "input_cached", "output_text",
                       "output_audio", "output_thinking")


@dataclass
class KeyRecord:
    token_hash: str
    key_name: str | None = None
    key_alias: str | None = None
    models: list[str] = field(default_factory=list)
    max_budget: float | None = None
    spend: float = 0.0
    budget_duration: str | None = None
    budget_reset_at: float | None = None
    expires: float | None = None
    max_parallel_requests: int | None = None
    rpm_limit: int | None = None
    max_session_seconds: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    deleted_at: float | None = None
    team_id: str | None = None  # the team that owns the key (owners.py)
    user_id: str | None = None  # the user that owns the key
    blocked: bool = False  # /key/block: refused at once, live sessions end
    regenerated_to: str | None = None  # a regenerated key's tombstone: the hash of its new secret

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> KeyRecord:
        values = dict(row)
        for name in _JSON_KEY_FIELDS:
            values[name] = json.loads(values[name]) if values.get(name) else ([] if name != "metadata" else {})
        values["blocked"] = bool(values.get("blocked"))
        return cls(**values)

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now


@dataclass
class SecretRecord:
    secret_hash: str
    token_hash: str | None
    expires_at: float
    session: dict[str, Any] | None
    created_at: float


class Store(OwnerStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.open()
        await self.migrate()

    async def close(self) -> None:
        await self.db.close()

    async def migrate(self) -> None:
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":  # two instances starting together migrate one at a time
                await tx.execute("SELECT pg_advisory_xact_lock(8311942)")
            await tx.execute("CREATE TABLE IF NOT EXISTS livegate_migrations "
                             "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            done = {row["version"] for row in await tx.fetch("SELECT version FROM livegate_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    await tx.execute(statement)
                await tx.execute("INSERT INTO livegate_migrations (version, applied_at) VALUES ($1, $2)",
                                 version, time.time())

    async def schema_version(self) -> int:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT MAX(version) AS v FROM livegate_migrations")
        return int(rows[0]["v"] or 0)

    async def ping(self) -> None:
        """A write that changes nothing: it fails when the store cannot be reached or written (a full disk,
        a read-only or deleted file), not only when it cannot be read."""
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE livegate_migrations SET applied_at = applied_at WHERE version = "
                             "(SELECT MAX(version) FROM livegate_migrations)")

    # --- keys ----------------------------------------------------------------------------------------------

    async def create_key(self, key: KeyRecord) -> None:
        async with self.db.transaction() as tx:
            await _insert_key(tx, key)

    async def get_key(self, token_hash: str, now: float | None = None) -> KeyRecord | None:
        """The key (deleted ones too: callers decide), its budget reset first when its period is over."""
        keys = await self.get_keys([token_hash], now)
        return keys.get(token_hash)

    async def get_keys(self, hashes: list[str], now: float | None = None) -> dict[str, KeyRecord]:
        if not hashes:
            return {}
        now = time.time() if now is None else now
        async with self.db.transaction() as tx:
            await self._reset_budgets(tx, hashes, now)
            rows = await tx.fetch(f"SELECT * FROM livegate_keys WHERE token_hash IN ({_params(len(hashes))})",
                                  *hashes)
        return {row["token_hash"]: KeyRecord.from_row(row) for row in rows}

    async def _reset_budgets(self, tx: Tx, hashes: list[str], now: float) -> None:
        await reset_due_budgets(tx, "livegate_keys", "token_hash", hashes, now)

    async def update_key(self, token_hash: str, changes: dict[str, Any], now: float) -> KeyRecord | None:
        sets: list[str] = []
        args: list[Any] = [token_hash]
        for name, value in changes.items():
            if name not in (*KEY_FIELDS, "spend", "budget_reset_at"):
                raise ValueError(f"not a key field: {name}")
            args.append(json.dumps(value) if name in _JSON_KEY_FIELDS else int(value) if name == "blocked" else value)
            sets.append(f"{name} = ${len(args)}")
        args.append(now)
        sets.append(f"updated_at = ${len(args)}")
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"UPDATE livegate_keys SET {', '.join(sets)} WHERE token_hash = $1 "
                                  "AND deleted_at IS NULL RETURNING *", *args)
        return KeyRecord.from_row(rows[0]) if rows else None

    async def delete_keys(self, hashes: list[str], now: float) -> list[str]:
        if not hashes:
            return []
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"UPDATE livegate_keys SET deleted_at = $1 WHERE deleted_at IS NULL AND "
                                  f"token_hash IN ({_params(len(hashes), 2)}) RETURNING token_hash", now, *hashes)
        return [row["token_hash"] for row in rows]

    async def list_keys(self, key_alias: str | None = None, *, team_id: str | None = None,
                        user_id: str | None = None, now: float | None = None) -> list[KeyRecord]:
        """Live keys (oldest first), optionally of one alias, team or user; budgets whose period ended are
        reset first, so the listing shows this period's spend."""
        where, args = ["deleted_at IS NULL"], []
        for column, value in (("key_alias", key_alias), ("team_id", team_id), ("user_id", user_id)):
            if value:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        async with self.db.transaction() as tx:
            await reset_due_budgets(tx, "livegate_keys", "token_hash", None, time.time() if now is None else now)
            rows = await tx.fetch(f"SELECT * FROM livegate_keys WHERE {' AND '.join(where)} ORDER BY created_at",
                                  *args)
        return [KeyRecord.from_row(row) for row in rows]

    async def regenerate_key(self, token_hash: str, new_hash: str, key_name: str, changes: dict[str, Any],
                             now: float) -> KeyRecord | None:
        """Give a live key a new secret: same settings (plus `changes`), spend and history. The old hash
        stays as a tombstone pointing at the new one; spend rows, live session slots and rate windows follow
        the key. None when the key is unknown or deleted."""
        async with self.db.transaction() as tx:
            lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
            await reset_due_budgets(tx, "livegate_keys", "token_hash", [token_hash], now)
            rows = await tx.fetch(f"SELECT * FROM livegate_keys WHERE token_hash = $1 AND deleted_at IS NULL{lock}",
                                  token_hash)
            if not rows:
                return None
            record = KeyRecord.from_row(rows[0])
            record.token_hash, record.key_name, record.updated_at = new_hash, key_name, now
            for name, value in changes.items():
                if name not in (*KEY_FIELDS, "spend", "budget_reset_at"):
                    raise ValueError(f"not a key field: {name}")
                setattr(record, name, value)
            await _insert_key(tx, record)
            await tx.execute("UPDATE livegate_keys SET deleted_at = $2, regenerated_to = $3, updated_at = $2 "
                             "WHERE token_hash = $1", token_hash, now, new_hash)
            await tx.execute("UPDATE livegate_keys SET regenerated_to = $2 WHERE regenerated_to = $1",
                             token_hash, new_hash)
            for table in ("livegate_sessions", "livegate_rate_windows"):
                await tx.execute(f"UPDATE {table} SET token_hash = $2 WHERE token_hash = $1", token_hash, new_hash)
            await tx.execute("UPDATE livegate_spend_logs SET api_key = $2 WHERE api_key = $1", token_hash, new_hash)
        return record

    # --- client secrets ------------------------------------------------------------------------------------

    async def create_secret(self, secret: SecretRecord) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("INSERT INTO livegate_client_secrets (secret_hash, token_hash, expires_at, session, "
                             "created_at) VALUES ($1, $2, $3, $4, $5)", secret.secret_hash, secret.token_hash,
                             float(secret.expires_at), json.dumps(secret.session) if secret.session else None,
                             float(secret.created_at))

    async def get_secret(self, secret_hash: str) -> SecretRecord | None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM livegate_client_secrets WHERE secret_hash = $1", secret_hash)
        if not rows:
            return None
        row = rows[0]
        return SecretRecord(row["secret_hash"], row["token_hash"], row["expires_at"],
                            json.loads(row["session"]) if row["session"] else None, row["created_at"])

    async def purge_secrets(self, expired_before: float) -> None:
        """Delete the client secrets that expired before `expired_before`."""
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM livegate_client_secrets WHERE expires_at < $1", float(expired_before))

    # --- limits --------------------------------------------------------------------------------------------

    async def acquire_session(self, token_hash: str, session_id: str, instance_id: str, model: str | None,
                              route: str, limit: int | None, now: float) -> bool:
        """Register a live session for the key, unless `limit` sessions are live already (on any instance)."""
        return await self.acquire_session_slot(token_hash, session_id, instance_id, model, route, now,
                                               [("token_hash", token_hash, limit)]) is None

    async def acquire_session_slot(self, token_hash: str, session_id: str, instance_id: str, model: str | None,
                                   route: str, now: float, limits: list[tuple[str, str, int | None]],
                                   team_id: str | None = None, user_id: str | None = None) -> str | None:
        """Register a live session of a key (owned by `team_id` and `user_id`) unless one of `limits` is
        reached: (column of livegate_sessions, value, at most this many live sessions). Returns the column of
        the first limit reached, None when the session was registered. Sessions on every instance count."""
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":  # serialise acquisitions of one key, team, user across instances
                for column, value, limit in limits:
                    if limit is not None:
                        await tx.fetch("SELECT pg_advisory_xact_lock(hashtext($1))", f"{column}:{value}")
            for column, value, limit in limits:
                if limit is None:
                    continue
                rows = await tx.fetch(f"SELECT COUNT(*) AS n FROM livegate_sessions WHERE {_SESSION_COLUMNS[column]} "
                                      "= $1 AND heartbeat_at > $2", value, now - STALE_SESSION_SECONDS)
                if int(rows[0]["n"]) >= limit:
                    return column
            await tx.execute("INSERT INTO livegate_sessions (session_id, token_hash, instance_id, model, route, "
                             "started_at, heartbeat_at, team_id, user_id) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
                             session_id, token_hash, instance_id, model, route, now, team_id, user_id)
        return None

    async def release_sessions(self, session_ids: list[str]) -> None:
        if session_ids:
            async with self.db.transaction() as tx:
                await tx.execute(f"DELETE FROM livegate_sessions WHERE session_id IN ({_params(len(session_ids))})",
                                 *session_ids)

    async def heartbeat(self, session_ids: list[str], now: float) -> None:
        if session_ids:
            async with self.db.transaction() as tx:
                await tx.execute(f"UPDATE livegate_sessions SET heartbeat_at = $1 WHERE session_id IN "
                                 f"({_params(len(session_ids), 2)})", now, *session_ids)
                await tx.execute("DELETE FROM livegate_sessions WHERE heartbeat_at < $1",
                                 now - 10 * STALE_SESSION_SECONDS)

    async def live_sessions(self, now: float) -> list[dict[str, Any]]:
        """The sessions registered on every instance (not stale), newest first."""
        async with self.db.transaction() as tx:
            return await tx.fetch("SELECT session_id, token_hash, team_id, user_id, instance_id, model, route, "
                                  "started_at, heartbeat_at, stop_requested FROM livegate_sessions WHERE "
                                  "heartbeat_at > $1 ORDER BY started_at DESC", now - STALE_SESSION_SECONDS)

    async def request_stop(self, session_id: str) -> bool:
        """Ask the instance running a session to end it (it looks at every key check); False if unknown."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch("UPDATE livegate_sessions SET stop_requested = 1 WHERE session_id = $1 "
                                  "RETURNING session_id", session_id)
        return bool(rows)

    async def stop_requests(self, instance_id: str) -> list[str]:
        """Sessions of this instance an administrator asked (on another instance) to end."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT session_id FROM livegate_sessions WHERE instance_id = $1 AND "
                                  "stop_requested = 1", instance_id)
        return [row["session_id"] for row in rows]

    async def count_request(self, token_hash: str, now: float) -> int:
        """Count one new session or REST call in the key's current minute; returns the minute's count."""
        window = int(now // 60) * 60
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "INSERT INTO livegate_rate_windows (token_hash, window_start, count) VALUES ($1, $2, 1) "
                "ON CONFLICT (token_hash, window_start) DO UPDATE SET count = livegate_rate_windows.count + 1 "
                "RETURNING count", token_hash, window)
            await tx.execute("DELETE FROM livegate_rate_windows WHERE token_hash = $1 AND window_start < $2",
                             token_hash, window)
        return int(rows[0]["count"])

    # --- spend ---------------------------------------------------------------------------------------------

    async def write_batch(self, spend: dict[str, float], logs: list[dict[str, Any]]) -> None:
        """Add spend to accounts (keys, teams, users: limits.account_of) and insert spend log rows, in one
        transaction (retried whole on failure; rows already written are skipped by request_id). A period that
        ended is reset before its new spend is added; a regenerated key's spend and rows go to its new hash."""
        async with self.db.transaction() as tx:
            await self._write_spend(tx, spend, logs)

    async def replay_spill(self, spill_id: str, spend: dict[str, float], logs: list[dict[str, Any]],
                           now: float) -> bool:
        """Write a spill file's rows unless its id was replayed before; False when it was."""
        async with self.db.transaction() as tx:
            done = await tx.fetch("SELECT spill_id FROM livegate_spill_replays WHERE spill_id = $1", spill_id)
            if done:
                return False
            await self._write_spend(tx, spend, logs)
            await tx.execute("INSERT INTO livegate_spill_replays (spill_id, replayed_at) VALUES ($1, $2)",
                             spill_id, now)
        return True

    async def _write_spend(self, tx: Tx, spend: dict[str, float], logs: list[dict[str, Any]]) -> None:
        from livegate.accounting.limits import split_account

        now = time.time()
        by_kind: dict[str, dict[str, float]] = {"key": {}, "team": {}, "user": {}}
        for account, amount in spend.items():
            kind, ident = split_account(account)
            by_kind[kind][ident] = by_kind[kind].get(ident, 0.0) + amount
        current = await _current_hashes(tx, {*by_kind["key"], *(row.get("api_key") or "" for row in logs)} - {""})
        for kind, amounts in by_kind.items():
            table, column = BUDGET_TABLES[kind]
            if kind == "key":
                amounts = _follow_regenerated(amounts, current)
            if not amounts:
                continue
            await reset_due_budgets(tx, table, column, list(amounts), now)
            for ident, amount in amounts.items():
                await tx.execute(f"UPDATE {table} SET spend = spend + $2 WHERE {column} = $1", ident,
                                 float(amount))
        for row in logs:
            if row.get("api_key") in current:
                row = {**row, "api_key": current[row["api_key"]]}
            if "transcript" in row:
                await tx.execute("INSERT INTO livegate_transcripts (request_id, transcript, created_at) VALUES "
                                 "($1, $2, $3) ON CONFLICT (request_id) DO NOTHING", row["request_id"],
                                 row["transcript"], now)
                row = {k: v for k, v in row.items() if k != "transcript"}
            names = list(row)
            await tx.execute(f"INSERT INTO livegate_spend_logs ({', '.join(names)}) VALUES "
                             f"({_params(len(names))}) ON CONFLICT (request_id) DO NOTHING",
                             *(row[name] for name in names))

    async def spend_logs(self, api_key: str | None = None, start: float | None = None, end: float | None = None,
                         model: str | None = None, limit: int = 1000, *, team_id: str | None = None,
                         user_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        for column, op, value in (("api_key", "=", api_key), ("start_time", ">=", start),
                                  ("start_time", "<", end), ("model", "=", model), ("team_id", "=", team_id),
                                  ("user_id", "=", user_id), ("status", "=", status)):
            if value is not None:
                args.append(value)
                where.append(f"{column} {op} ${len(args)}")
        args.append(limit)
        sql = (f"SELECT * FROM livegate_spend_logs {'WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY start_time DESC LIMIT ${len(args)}")
        async with self.db.transaction() as tx:
            return await tx.fetch(sql, *args)


    async def spend_log(self, request_id: str) -> tuple[dict[str, Any], str | None] | None:
        """One spend row (by its request id, or the OpenAI session id) and its transcript (JSON text, None when
        none was kept); None when there is no such row."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch("SELECT * FROM livegate_spend_logs WHERE request_id = $1", request_id)
            if not rows:
                rows = await tx.fetch("SELECT * FROM livegate_spend_logs WHERE session_id = $1 ORDER BY start_time "
                                      "DESC LIMIT 1", request_id)
            if not rows:
                return None
            kept = await tx.fetch("SELECT transcript FROM livegate_transcripts WHERE request_id = $1",
                                  rows[0]["request_id"])
        return rows[0], kept[0]["transcript"] if kept else None


# kind of account -> (its table, its id column)
BUDGET_TABLES = {"key": ("livegate_keys", "token_hash"), "team": ("livegate_teams", "team_id"),
                 "user": ("livegate_users", "user_id")}
_SESSION_COLUMNS = {"token_hash": "token_hash", "team_id": "team_id", "user_id": "user_id"}


async def _insert_key(tx: Tx, key: KeyRecord) -> None:
    await tx.execute(
        "INSERT INTO livegate_keys (token_hash, key_name, key_alias, models, max_budget, spend, budget_duration, "
        "budget_reset_at, expires, max_parallel_requests, rpm_limit, max_session_seconds, metadata, tags, "
        "created_at, updated_at, team_id, user_id, blocked) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        key.token_hash, key.key_name, key.key_alias, json.dumps(key.models), _f(key.max_budget),
        float(key.spend), key.budget_duration, _f(key.budget_reset_at), _f(key.expires),
        key.max_parallel_requests, key.rpm_limit, _f(key.max_session_seconds), json.dumps(key.metadata),
        json.dumps(key.tags), key.created_at, key.updated_at, key.team_id, key.user_id, int(key.blocked))


async def _current_hashes(tx: Tx, hashes: set[str]) -> dict[str, str]:
    """Regenerated keys among `hashes`: old hash -> the key's hash now."""
    if not hashes:
        return {}
    rows = await tx.fetch(f"SELECT token_hash, regenerated_to FROM livegate_keys WHERE regenerated_to IS NOT NULL "
                          f"AND token_hash IN ({_params(len(hashes))})", *sorted(hashes))
    return {row["token_hash"]: row["regenerated_to"] for row in rows}


def _follow_regenerated(amounts: dict[str, float], current: dict[str, str]) -> dict[str, float]:
    """Spend by key hash, a regenerated key's old hash counted on its new one."""
    out: dict[str, float] = {}
    for old, amount in amounts.items():
        new = current.get(old, old)
        out[new] = out.get(new, 0.0) + amount
    return out


def _params(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _f(value: float | None) -> float | None:
    return None if value is None else float(value)
