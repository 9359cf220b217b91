"""The counters on PostgreSQL, when a fleet shares a database but no Redis (counters.py says what they count).

Each call is one transaction that first takes an advisory lock per account or lease scope it touches (in sorted
order, so two calls cannot deadlock) and reads the time from the database, so every instance counts the same
minute. Tables (store.py, migration 5): `livegate_rate_windows` (requests per account and minute, as before),
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
                used = await _windows(tx, "livegate_rate_windows", "token_hash", "count", [a for a, _ in rpm], window)
                for account, limit in rpm:
                    if used.get(account, 0) >= limit:
                        return Refused("rpm", account, limit, used.get(account, 0))
                refused = await _tpm_refusal(tx, tpm, window)
                if refused is not None:
                    return refused
                if leases:
                    scopes = [s for s, _ in leases]
                    await tx.execute("DELETE FROM livegate_leases WHERE scope = ANY($1::text[]) AND expires_at <= $2",
                                     scopes, now)
                    rows = await tx.fetch("SELECT scope, COUNT(*) AS n FROM livegate_leases WHERE scope = "
                                          "ANY($1::text[]) AND holder <> $2 GROUP BY scope", scopes, holder)
                    live = {row["scope"]: int(row["n"]) for row in rows}
                    for scope, ceiling in leases:
                        if ceiling is not None and live.get(scope, 0) >= ceiling:
                            return Refused("parallel", scope, ceiling, live.get(scope, 0))
                if rpm:
                    accounts = [a for a, _ in rpm]
                    await tx.execute(
                        "INSERT INTO livegate_rate_windows (token_hash, window_start, count) "
                        "SELECT DISTINCT a, $2::bigint, 1 FROM unnest($1::text[]) AS a "
                        "ON CONFLICT (token_hash, window_start) DO UPDATE SET count = livegate_rate_windows.count + 1",
                        accounts, window)
                    await tx.execute("DELETE FROM livegate_rate_windows WHERE token_hash = ANY($1::text[]) AND "
                                     "window_start < $2", accounts, window)
                if leases:
                    await tx.execute("INSERT INTO livegate_leases (scope, holder, expires_at) "
                                     "SELECT DISTINCT s, $2::text, $3::float8 FROM unnest($1::text[]) AS s "
                                     "ON CONFLICT (scope, holder) DO UPDATE SET expires_at = $3",
                                     [s for s, _ in leases], holder, now + ttl)
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
                accounts = [b.account for b in budgets]
                now = await _lock(tx, accounts, [a for a, _ in tpm])
                refused = await _tpm_refusal(tx, tpm, minute_of(now) * WINDOW_S)
                if refused is not None or not budgets:
                    return refused
                await tx.execute("INSERT INTO livegate_spend_counters (counter, spend, touched_at) SELECT c, s, $3 "
                                 "FROM unnest($1::text[], $2::float8[]) AS r(c, s) ON CONFLICT (counter) DO NOTHING",
                                 [b.counter for b in budgets], [float(b.seed) for b in budgets], now)
                await tx.execute("DELETE FROM livegate_holds WHERE account = ANY($1::text[]) AND expires_at <= $2",
                                 accounts, now)
                rows = await tx.fetch(
                    "SELECT r.a AS account, c.spend, COALESCE((SELECT SUM(amount) FROM livegate_holds h WHERE "
                    "h.account = r.a), 0) AS held FROM unnest($1::text[], $2::text[]) AS r(a, c) JOIN "
                    "livegate_spend_counters c ON c.counter = r.c", accounts, [b.counter for b in budgets])
                found = {row["account"]: (float(row["spend"]), float(row["held"])) for row in rows}
                for budget in budgets:
                    spend, held = found.get(budget.account, (budget.seed, 0.0))
                    if spend + held + amount > budget.max_budget + 1e-12:
                        return Refused("budget", budget.account, budget.max_budget, spend + held)
                await tx.execute("INSERT INTO livegate_holds (account, holder, amount, expires_at) "
                                 "SELECT DISTINCT a, $2::text, $3::float8, $4::float8 FROM unnest($1::text[]) AS a "
                                 "ON CONFLICT (account, holder) DO UPDATE SET amount = $3, expires_at = $4",
                                 accounts, holder, float(amount), now + ttl)
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
    """Serialise calls touching the same accounts or scopes across instances (one lock per name, taken in sorted
    order in one statement); the database's time."""
    ordered = sorted({f"livegate-counter:{n}" for group in names for n in group})
    if ordered:
        await tx.fetch("SELECT pg_advisory_xact_lock(hashtext(n)) FROM unnest($1::text[]) WITH ORDINALITY AS l(n, i) "
                       "ORDER BY i", ordered)
    return await _now(tx)


async def _windows(tx: Tx, table: str, column: str, value: str, accounts: list[str], window: int) -> dict[str, int]:
    if not accounts:
        return {}
    rows = await tx.fetch(f"SELECT {column} AS account, {value} AS n FROM {table} WHERE {column} = ANY($1::text[]) "
                          "AND window_start = $2", accounts, window)
    return {row["account"]: int(row["n"]) for row in rows}


async def _tpm_refusal(tx: Tx, tpm: Sequence[tuple[str, int]], window: int) -> Refused | None:
    used = await _windows(tx, "livegate_token_windows", "account", "tokens", [a for a, _ in tpm], window)
    for account, limit in tpm:
        if used.get(account, 0) >= limit:
            return Refused("tpm", account, limit, used.get(account, 0))
    return None
