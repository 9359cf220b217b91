"""The two database drivers behind the spend store, with one interface: SQLite (the standard `sqlite3`
module, on one worker thread) and PostgreSQL (`asyncpg`, a connection pool).

SQL is written once, with PostgreSQL's `$1` placeholders; the SQLite driver rewrites them to `?1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=256)
def _sqlite_sql(sql: str) -> str:
    """PostgreSQL's `$1` placeholders as SQLite's `?1` (the same few statements, over and over)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class StoreUnavailable(Exception):
    """The database cannot be reached or refused an operation. The message names no secret."""


Statement = tuple[str, tuple[Any, ...]]  # SQL with $n placeholders, and its arguments


class Tx(Protocol):
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...


class Database(Protocol):
    dialect: str
    description: str  # for logs and readiness: no password
    identity: str  # which database this is, for spill files (an absolute path, or host:port/db)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]: ...
    async def batch(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]: ...


class SQLiteDatabase:
    """One connection on one thread; an asyncio lock makes each transaction whole (WAL, busy timeout).

    The file is checked before every transaction: once it is deleted or replaced, what the open connection
    would write goes to a file nobody will read again, so the store is unavailable (readiness 503, spend
    rows held and spilled at shutdown) until a restart opens the file at its path."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        self._expanded = os.path.expanduser(path)
        self.identity = "sqlite:" + (path if path == ":memory:" else os.path.abspath(self._expanded))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livegate-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                Path(self._expanded).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._expanded, isolation_level=None, check_same_thread=False, timeout=10)
            conn.row_factory = sqlite3.Row
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn

        try:
            self._conn = await self._run(connect)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from None
        if self.path != ":memory:":
            found = os.stat(self._expanded)
            self._file = (found.st_dev, found.st_ino)

    def _usable(self) -> sqlite3.Connection:
        """The open connection, once its file is checked."""
        if self._conn is None:
            raise StoreUnavailable("the SQLite database is closed")
        self._check_file()
        return self._conn

    def _check_file(self) -> None:
        if self._file is None:
            return
        try:
            found = os.stat(self._expanded)
        except FileNotFoundError:
            raise StoreUnavailable(f"the SQLite file {self.path} was deleted while open") from None
        except OSError as exc:
            raise StoreUnavailable(f"the SQLite file {self.path} cannot be checked: {exc.strerror}") from None
        if (found.st_dev, found.st_ino) != self._file:
            raise StoreUnavailable(f"the SQLite file {self.path} was replaced while open (restart to use it)")

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await self._run(conn.close)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        conn = self._usable()
        async with self._lock:
            tx = _SQLiteTx(self, conn)
            await tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await tx.execute("ROLLBACK")
                raise
            await tx.execute("COMMIT")

    async def batch(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        """`statements` in one transaction, each one's rows: one trip to the database's thread, where a
        `transaction` makes one per statement (the state writer's path, at every session's turn edges)."""
        conn = self._usable()
        queries = [(_sqlite_sql(sql), args) for sql, args in statements]

        def run() -> list[list[dict[str, Any]]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = [[dict(row) for row in conn.execute(query, args).fetchall()] for query, args in queries]
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            return results

        async with self._lock:  # a cancelled caller leaves the thread to finish: the next trip queues behind it
            try:
                return await self._run(run)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"SQLite: {exc}") from None


class _SQLiteTx:
    def __init__(self, db: SQLiteDatabase, conn: sqlite3.Connection) -> None:
        self.db, self.conn = db, conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        query = _sqlite_sql(sql)

        def run() -> list[dict[str, Any]]:
            return [dict(row) for row in self.conn.execute(query, args).fetchall()]

        try:
            return await self.db._run(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from None


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = self.identity = "postgresql:" + _redact(url)
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        try:
            # min_size 0: asyncpg keeps no connection floor, whose upkeep logs a traceback every second or two
            # of an outage; connections are opened on demand and kept while in use (max_inactive 300 s).
            self._pool = await asyncpg.create_pool(self.url, min_size=0, max_size=10, timeout=10,
                                                   command_timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot connect to {self.description}: {type(exc).__name__}") from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        import asyncpg

        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL pool is closed")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PostgresTx(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                TimeoutError) as exc:
            # InternalClientError: a connection whose query was cancelled mid-outage, handed out again
            raise StoreUnavailable(f"PostgreSQL: {type(exc).__name__}: {_first_line(exc)}") from None

    async def batch(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        """`statements` in one transaction, each one's rows."""
        async with self.transaction() as tx:
            return [await tx.fetch(sql, *args) for sql, args in statements]


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in await self.conn.fetch(sql, *args)]


def open_database(database_url: str | None, store_path: str | None) -> Database:
    if database_url:
        if database_url.startswith(("postgresql://", "postgres://")):
            return PostgresDatabase(database_url)
        if database_url.startswith("sqlite:///"):
            return SQLiteDatabase(database_url[len("sqlite:///"):] or ":memory:")
        raise ValueError("database_url: expected postgresql://... (or sqlite:///PATH)")
    return SQLiteDatabase(store_path or ":memory:")


def _redact(url: str) -> str:
    """host:port/db of a URL, without user or password."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1].split("?", 1)[0]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""
