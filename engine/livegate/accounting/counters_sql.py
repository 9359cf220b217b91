"""The counters on PostgreSQL, when a fleet shares a database but no Redis (counters.py says what they count).

Each call is one transaction that first takes an advisory lock per account or lease scope it touches (in sorted
order, so two calls cannot deadlock) and reads the time from the database, so every instance counts the same
minute. Tables (store.py, migration 3): `livegate_rate_windows` (requests per account and minute, as before),
`livegate_token_windows`, `livegate_leases`, `livegate_holds` and `livegate_spend_counters`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from livegate.accounting.counters import COUNTER_TTL_S, WINDOW_S, Budget, CountersUnavailable, Refused, minute_of
from livegate.accounting.database import Database, StoreUnavailable, Tx


class PostgresCounters:
    backend = "postgresql"

    def __init__(self, db: Database) -> None:
        self.db = db  # the spend store's pool: opened and closed with it
        self.description = db.description

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        try:
            async with self.db.transaction() as tx:
                await tx.fetch("SELECT 1 AS ok")
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None

    async def admit(self, holder: str, rpm: Sequence[tuple[str, int]], tpm: Sequence[tuple[str, int]],
                    leases: Sequence[tuple[str, int | None]], ttl: float) -> Refused | None:
        try:
            async with self.db.transaction() as tx:
                now = await _lock(tx, [a for a, _ in rpm], [a for a, _ in tpm], [s for s, _ in leases])
                window = minute_of(now) * WINDOW_S
                for account, limit in rpm:
                    used = await _window(tx, "livegate_rate_windows", "token_hash", "count", account, window)
                    if used >= limit:
                        return Refused("rpm", account, limit, used)
                for account, limit in tpm:
                    used = await _window(tx, "livegate_token_windows", "account", "tokens", account, window)
                    if used >= limit:
                        return Refused("tpm", account, limit, used)
                for scope, ceiling in leases:
                    await tx.execute("DELETE FROM livegate_leases WHERE scope = $1 AND expires_at <= $2", scope, now)
                    if ceiling is None:
                        continue
                    rows = await tx.fetch("SELECT COUNT(*) AS n FROM livegate_leases WHERE scope = $1 AND holder <> $2",
                                          scope, holder)
                    if int(rows[0]["n"]) >= ceiling:
                        return Refused("parallel", scope, ceiling, int(rows[0]["n"]))
                for account, _ in rpm:
                    await tx.execute(
                        "INSERT INTO livegate_rate_windows (token_hash, window_start, count) VALUES ($1, $2, 1) "
                        "ON CONFLICT (token_hash, window_start) DO UPDATE SET count = livegate_rate_windows.count + 1",
                        account, window)
                    await tx.execute("DELETE FROM livegate_rate_windows WHERE token_hash = $1 AND window_start < $2",
                                     account, window)
                for scope, _ in leases:
                    await tx.execute("INSERT INTO livegate_leases (scope, holder, expires_at) VALUES ($1, $2, $3) "
                                     "ON CONFLICT (scope, holder) DO UPDATE SET expires_at = $3", scope, holder,
                                     now + ttl)
                return None
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None

    async def renew(self, leases: Sequence[tuple[str, str]], holds: Sequence[tuple[str, str]], ttl: float) -> None:
        if not (leases or holds):
            return
        try:
            async with self.db.transaction() as tx:
                now = await _now(tx)
                if leases:
                    await tx.execute(
                        "INSERT INTO livegate_leases (scope, holder, expires_at) SELECT s, h, $3 FROM "
                        "unnest($1::text[], $2::text[]) AS l(s, h) ON CONFLICT (scope, holder) DO UPDATE SET "
                        "expires_at = $3", [s for s, _ in leases], [h for _, h in leases], now + ttl)
                if holds:
                    await tx.execute(
                        "UPDATE livegate_holds SET expires_at = $3 FROM unnest($1::text[], $2::text[]) AS r(a, h) "
                        "WHERE account = r.a AND holder = r.h", [a for a, _ in holds], [h for _, h in holds],
                        now + ttl)
                await tx.execute("DELETE FROM livegate_spend_counters WHERE touched_at < $1", now - COUNTER_TTL_S)
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None

    async def release(self, leases: Sequence[tuple[str, str]]) -> None:
        if not leases:
            return
        try:
            async with self.db.transaction() as tx:
                await tx.execute("DELETE FROM livegate_leases USING unnest($1::text[], $2::text[]) AS r(s, h) "
                                 "WHERE scope = r.s AND holder = r.h", [s for s, _ in leases], [h for _, h in leases])
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None

    async def reserve(self, holder: str, budgets: Sequence[Budget], amount: float,
                      tpm: Sequence[tuple[str, int]], ttl: float) -> Refused | None:
        try:
            async with self.db.transaction() as tx:
                now = await _lock(tx, [b.account for b in budgets], [a for a, _ in tpm])
                window = minute_of(now) * WINDOW_S
                for account, limit in tpm:
                    used = await _window(tx, "livegate_token_windows", "account", "tokens", account, window)
                    if used >= limit:
                        return Refused("tpm", account, limit, used)
                for budget in budgets:
                    spend, held = await _budget(tx, budget.account, budget.counter, budget.seed, now)
                    if spend + held + amount > budget.max_budget + 1e-12:
                        return Refused("budget", budget.account, budget.max_budget, spend + held)
                for budget in budgets:
                    await tx.execute("INSERT INTO livegate_holds (account, holder, amount, expires_at) VALUES "
                                     "($1, $2, $3, $4) ON CONFLICT (account, holder) DO UPDATE SET amount = $3, "
                                     "expires_at = $4", budget.account, holder, float(amount), now + ttl)
                return None
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None

    async def apply(self, spend: Mapping[str, tuple[float, float]], tokens: Mapping[str, int],
                    settled: Sequence[tuple[str, str]]) -> None:
        if not (spend or tokens or settled):
            return
        try:
            async with self.db.transaction() as tx:
                now = await _lock(tx, [c.split("|", 1)[0] for c in spend], [a for a, _ in settled])
                for counter, (amount, seed) in spend.items():
                    await tx.execute(
                        "INSERT INTO livegate_spend_counters (counter, spend, touched_at) VALUES ($1, $2, $3) "
                        "ON CONFLICT (counter) DO UPDATE SET spend = livegate_spend_counters.spend + $4, "
                        "touched_at = $3", counter, float(seed) + float(amount), now, float(amount))
                window = minute_of(now) * WINDOW_S
                for account, count in tokens.items():
                    await tx.execute(
                        "INSERT INTO livegate_token_windows (account, window_start, tokens) VALUES ($1, $2, $3) "
                        "ON CONFLICT (account, window_start) DO UPDATE SET tokens = livegate_token_windows.tokens + $3",
                        account, window, int(count))
                    await tx.execute("DELETE FROM livegate_token_windows WHERE account = $1 AND window_start < $2",
                                     account, window)
                if settled:
                    await tx.execute("DELETE FROM livegate_holds USING unnest($1::text[], $2::text[]) AS r(a, h) "
                                     "WHERE account = r.a AND holder = r.h", [a for a, _ in settled],
                                     [h for _, h in settled])
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None

    async def live(self, scopes: Sequence[str]) -> dict[str, int]:
        if not scopes:
            return {}
        try:
            async with self.db.transaction() as tx:
                now = await _now(tx)
                rows = await tx.fetch("SELECT scope, COUNT(*) AS n FROM livegate_leases WHERE scope = ANY($1::text[]) "
                                      "AND expires_at > $2 GROUP BY scope", list(scopes), now)
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None
        counts = {row["scope"]: int(row["n"]) for row in rows}
        return {scope: counts.get(scope, 0) for scope in scopes}

    async def budget(self, account: str, counter: str) -> tuple[float | None, float]:
        try:
            async with self.db.transaction() as tx:
                now = await _now(tx)
                rows = await tx.fetch("SELECT spend FROM livegate_spend_counters WHERE counter = $1", counter)
                held = await tx.fetch("SELECT COALESCE(SUM(amount), 0) AS held FROM livegate_holds WHERE "
                                      "account = $1 AND expires_at > $2", account, now)
        except StoreUnavailable as exc:
            raise CountersUnavailable(str(exc)) from None
        return (float(rows[0]["spend"]) if rows else None), float(held[0]["held"])


async def _now(tx: Tx) -> float:
    rows = await tx.fetch("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now")
    return float(rows[0]["now"])


async def _lock(tx: Tx, *names: Iterable[str]) -> float:
    """Serialise calls touching the same accounts or scopes across instances; the database's time."""
    for name in sorted({n for group in names for n in group}):
        await tx.fetch("SELECT pg_advisory_xact_lock(hashtext($1))", f"livegate-counter:{name}")
    return await _now(tx)


async def _window(tx: Tx, table: str, column: str, value: str, account: str, window: int) -> int:
    rows = await tx.fetch(f"SELECT {value} AS n FROM {table} WHERE {column} = $1 AND window_start = $2",
                          account, window)
    return int(rows[0]["n"]) if rows else 0


async def _budget(tx: Tx, account: str, counter: str, seed: float, now: float) -> tuple[float, float]:
    """The counter's spend (created from `seed` when new) and what is held against the account (lapsed holds
    are dropped first)."""
    await tx.execute("INSERT INTO livegate_spend_counters (counter, spend, touched_at) VALUES ($1, $2, $3) "
                     "ON CONFLICT (counter) DO NOTHING", counter, float(seed), now)
    spend = await tx.fetch("SELECT spend FROM livegate_spend_counters WHERE counter = $1", counter)
    await tx.execute("DELETE FROM livegate_holds WHERE account = $1 AND expires_at <= $2", account, now)
    held = await tx.fetch("SELECT COALESCE(SUM(amount), 0) AS held FROM livegate_holds WHERE account = $1", account)
    return float(spend[0]["spend"]), float(held[0]["held"])
