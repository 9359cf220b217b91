"""The spend store: keys, client secrets, spend logs, live sessions and rate windows, on SQLite or
PostgreSQL (database.py), with the same schema and versioned migrations applied at start.

Times are UNIX seconds (float); JSON fields are text. Keys and secrets are stored as SHA-256 hashes only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from livegate.accounting.database import Database, Tx

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
    (2, [  # sessions that outlive the process (livegate/takeover/store.py reads and writes these)
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
]

KEY_FIELDS = ("key_alias", "models", "max_budget", "budget_duration", "expires", "max_parallel_requests",
              "rpm_limit", "max_session_seconds", "metadata", "tags")
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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> KeyRecord:
        values = dict(row)
        for name in _JSON_KEY_FIELDS:
            values[name] = json.loads(values[name]) if values.get(name) else ([] if name != "metadata" else {})
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


class Store:
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
        async with self.db.transaction() as tx:
            await tx.fetch("SELECT 1 AS ok")

    # --- keys ----------------------------------------------------------------------------------------------

    async def create_key(self, key: KeyRecord) -> None:
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO livegate_keys (token_hash, key_name, key_alias, models, max_budget, spend, "
                "budget_duration, budget_reset_at, expires, max_parallel_requests, rpm_limit, max_session_seconds, "
                "metadata, tags, created_at, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                key.token_hash, key.key_name, key.key_alias, json.dumps(key.models), _f(key.max_budget),
                float(key.spend), key.budget_duration, _f(key.budget_reset_at), _f(key.expires),
                key.max_parallel_requests, key.rpm_limit, _f(key.max_session_seconds), json.dumps(key.metadata),
                json.dumps(key.tags), key.created_at, key.updated_at)

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
        """LiteLLM's budget_duration: spend goes back to 0 when the period ends, and a new period starts."""
        due = await tx.fetch(
            f"SELECT token_hash, budget_duration, budget_reset_at FROM livegate_keys WHERE token_hash IN "
            f"({_params(len(hashes), 2)}) AND budget_reset_at IS NOT NULL AND budget_reset_at <= $1", now, *hashes)
        from livegate.accounting.keys import parse_duration

        for row in due:
            period = parse_duration(row["budget_duration"], "budget_duration") or 0
            next_reset = row["budget_reset_at"]
            while period and next_reset <= now:
                next_reset += period
            await tx.execute("UPDATE livegate_keys SET spend = 0, budget_reset_at = $2 WHERE token_hash = $1 "
                             "AND budget_reset_at = $3", row["token_hash"], float(next_reset),
                             row["budget_reset_at"])

    async def update_key(self, token_hash: str, changes: dict[str, Any], now: float) -> KeyRecord | None:
        sets: list[str] = []
        args: list[Any] = [token_hash]
        for name, value in changes.items():
            if name not in (*KEY_FIELDS, "spend", "budget_reset_at"):
                raise ValueError(f"not a key field: {name}")
            args.append(json.dumps(value) if name in _JSON_KEY_FIELDS else value)
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

    async def list_keys(self, key_alias: str | None = None) -> list[KeyRecord]:
        async with self.db.transaction() as tx:
            if key_alias:
                rows = await tx.fetch("SELECT * FROM livegate_keys WHERE deleted_at IS NULL AND key_alias = $1 "
                                      "ORDER BY created_at", key_alias)
            else:
                rows = await tx.fetch("SELECT * FROM livegate_keys WHERE deleted_at IS NULL ORDER BY created_at")
        return [KeyRecord.from_row(row) for row in rows]

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

    # --- limits --------------------------------------------------------------------------------------------

    async def acquire_session(self, token_hash: str, session_id: str, instance_id: str, model: str | None,
                              route: str, limit: int | None, now: float) -> bool:
        """Register a live session for the key, unless `limit` sessions are live already (on any instance)."""
        async with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":  # serialise acquisitions of one key across instances
                await tx.fetch("SELECT token_hash FROM livegate_keys WHERE token_hash = $1 FOR UPDATE", token_hash)
            if limit is not None:
                rows = await tx.fetch("SELECT COUNT(*) AS n FROM livegate_sessions WHERE token_hash = $1 "
                                      "AND heartbeat_at > $2", token_hash, now - STALE_SESSION_SECONDS)
                if int(rows[0]["n"]) >= limit:
                    return False
            await tx.execute("INSERT INTO livegate_sessions (session_id, token_hash, instance_id, model, route, "
                             "started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                             session_id, token_hash, instance_id, model, route, now)
        return True

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
        """Add spend to keys and insert spend log rows, in one transaction (retried whole on failure;
        rows already written are skipped by request_id)."""
        async with self.db.transaction() as tx:
            for token_hash, amount in spend.items():
                await tx.execute("UPDATE livegate_keys SET spend = spend + $2 WHERE token_hash = $1",
                                 token_hash, float(amount))
            for row in logs:
                names = list(row)
                await tx.execute(f"INSERT INTO livegate_spend_logs ({', '.join(names)}) VALUES "
                                 f"({_params(len(names))}) ON CONFLICT (request_id) DO NOTHING",
                                 *(row[name] for name in names))

    async def spend_logs(self, api_key: str | None = None, start: float | None = None, end: float | None = None,
                         model: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = [], []
        for column, op, value in (("api_key", "=", api_key), ("start_time", ">=", start),
                                  ("start_time", "<", end), ("model", "=", model)):
            if value is not None:
                args.append(value)
                where.append(f"{column} {op} ${len(args)}")
        args.append(limit)
        sql = (f"SELECT * FROM livegate_spend_logs {'WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY start_time DESC LIMIT ${len(args)}")
        async with self.db.transaction() as tx:
            return await tx.fetch(sql, *args)


def _params(count: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _f(value: float | None) -> float | None:
    return None if value is None else float(value)
