"""Fixtures and helpers of the accounting tests: a throwaway PostgreSQL server (session-wide, one fresh
database per test) and stores on either backend."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from livegate.accounting.database import open_database
from livegate.accounting.store import Store
from tests.fakes.postgres import PostgresServer, postgres_bin, postgres_server
from tests.fakes.redis import RedisServer, redis_bin, redis_server

NO_POSTGRES = "PostgreSQL binaries (initdb, pg_ctl) are not installed: apt-get install postgresql (.ci/run does)"
NO_REDIS = "redis-server is not installed: apt-get install redis-server (.ci/run does)"


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisServer]:
    """One Redis for the session (tests use their own key prefixes or flush it)."""
    if redis_bin() is None:
        pytest.skip(NO_REDIS)
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if postgres_bin() is None:
        pytest.skip(NO_POSTGRES)
    try:
        with postgres_server() as server:
            yield server
    except subprocess.CalledProcessError as exc:  # pragma: no cover - a broken local install
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')[-500:]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend, as a `database_url`."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'livegate.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(open_database(database_url, None))
    await store.open()
    try:
        yield store
    finally:
        await store.close()
