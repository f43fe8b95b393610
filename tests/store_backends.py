"""Both stores under one fixture: the conformance suite runs each store test on SQLite
and on PostgreSQL (127.0.0.1:5432, trust auth, database `test`; RELAY_TEST_POSTGRES
names another). Each PostgreSQL test gets a schema of its own, dropped after it.

PostgreSQL's params skip only when it does not answer AND RELAY_REQUIRE_POSTGRES is
unset; .ci/run sets it, so CI fails rather than skip.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.store import Store
from relay.store.postgres import PostgresStore, open_postgres_store
from relay.store.sqlite import SqliteStore, open_sqlite_store

POSTGRES_DSN = os.environ.get("RELAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgres"]


def _answers(dsn: str) -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


_ANSWERED: list[bool] = []


def require_postgres() -> None:
    """Skip, unless PostgreSQL answers or CI requires it (then fail loudly)."""
    if not _ANSWERED:
        _ANSWERED.append(_answers(POSTGRES_DSN))
    if not _ANSWERED[0]:
        if os.environ.get("RELAY_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL does not answer at {POSTGRES_DSN}")
        pytest.skip("PostgreSQL does not answer (set RELAY_REQUIRE_POSTGRES=1 to fail instead)")


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN whose connections live in a new schema of their own, dropped afterwards."""
    require_postgres()
    import asyncpg

    schema = f"t_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_DSN else "?"
    try:
        # Its connections carry the schema's name too, so a test can find (and cut) them.
        yield f"{POSTGRES_DSN}{separator}search_path={schema}&application_name={schema}"
    finally:
        asyncio.run(admin(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(params=BACKENDS)
def backend_dsn(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite; for PostgreSQL, the DSN of a schema of this test's own."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
async def store(backend_dsn: str | None, tmp_path: Path) -> AsyncIterator[Any]:
    """The store under test, on each backend in turn."""
    if backend_dsn is None:
        async with open_sqlite_store(tmp_path / "relay.sqlite3", busy_timeout_ms=100) as opened:
            yield opened
        return
    async with open_postgres_store(backend_dsn, migrate_first=True, acquire_timeout_s=1.0) as pg:
        yield pg


async def execute_sql(store: Store, sqlite_sql: str, postgres_sql: str | None = None) -> None:
    """Run raw SQL on the store's own database (fault injection, odd rows): SQLite's
    words, or PostgreSQL's where they differ."""
    if isinstance(store, SqliteStore):
        await store.run(lambda c: c.executescript(sqlite_sql))
    elif isinstance(store, PostgresStore):
        await store.read(lambda c: c.execute(postgres_sql or sqlite_sql))
    else:  # pragma: no cover - a test's mistake
        raise TypeError(type(store).__name__)


async def scalar(store: Store, sql: str) -> Any:
    """One value of a query both dialects read alike."""
    if isinstance(store, SqliteStore):
        return await store.run(lambda c: c.execute(sql).fetchone()[0])
    assert isinstance(store, PostgresStore)
    return await store.read(lambda c: c.fetchval(sql))


async def add_failing_trigger(store: Store, table: str, when: str) -> None:
    """Fault injection with a real trigger: rows of `table` for which `when` (on NEW)
    holds cannot be written."""
    await execute_sql(
        store,
        f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} WHEN {when} "
        "BEGIN SELECT RAISE(ABORT, 'this row cannot be written'); END;",
        f"CREATE FUNCTION fail_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF {when} THEN RAISE EXCEPTION 'this row cannot be written'; END IF; RETURN NEW; "
        f"END $$; CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION fail_{table}()",
    )
