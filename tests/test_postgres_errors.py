"""How the PostgreSQL store names what went wrong: a fixed phrase for the store, the
database's words for one item, and never a password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from relay.store import StoreUnavailable
from relay.store.postgres import PostgresStore, open_postgres_store
from relay.store.postgres_connection import (
    failure_kind,
    is_store_fault,
    mask_dsn,
    rejection,
    scrub_secret,
)


def test_a_dsn_without_a_password_or_unparsable_is_shown_safely() -> None:
    assert mask_dsn("postgresql://relay@db/relay?sslmode=require") == "postgresql://relay@db/relay"
    assert mask_dsn("postgresql://relay:pw@db/relay") == "postgresql://relay:***@db/relay"
    assert mask_dsn("postgresql://[::1/x") == "postgres://***"
    assert scrub_secret("no secret here", "postgresql://[::1/x") == "no secret here"


def test_store_faults_and_item_faults_are_told_apart() -> None:
    disk_full = asyncpg.DiskFullError("no space")
    assert is_store_fault(disk_full) and failure_kind(disk_full) == "disk full"
    read_only = asyncpg.ReadOnlySQLTransactionError("read only")
    assert failure_kind(read_only) == "read-only"
    assert failure_kind(asyncpg.DeadlockDetectedError("x")) == "conflict"
    assert failure_kind(ConnectionResetError()) == "connection lost"
    assert failure_kind(TimeoutError()) == "timed out"
    assert failure_kind(RuntimeError("?")) == "write failed"
    nul = asyncpg.CharacterNotInRepertoireError("invalid byte sequence")
    assert not is_store_fault(nul)
    assert rejection(nul).startswith("cannot be stored: 22021")
    assert not is_store_fault(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"))
    assert rejection(ValueError("buyer@example.com")) == "cannot be stored: ValueError"


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    async with open_postgres_store(postgres_dsn, migrate_first=True) as store:
        yield store


async def test_backup_is_pg_dumps_job_and_a_failed_read_is_store_unavailable(
    pg: PostgresStore, tmp_path: Path
) -> None:
    with pytest.raises(StoreUnavailable, match="pg_dump"):
        await pg.backup(tmp_path / "copy")

    async def broken(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(StoreUnavailable, match="write failed"):
        await pg.read(broken)


async def test_watch_for_work_wakes_at_once_then_on_notifications(pg: PostgresStore) -> None:
    woken = asyncio.Queue[str]()
    watcher = asyncio.create_task(pg.watch_for_work(lambda: woken.put_nowait("wake")))
    try:
        await asyncio.wait_for(woken.get(), timeout=10)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
