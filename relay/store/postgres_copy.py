"""Move an embedded SQLite store into an empty PostgreSQL one (`relay copy-store`).

Read from one SQLite snapshot, written in batches with COPY inside one PostgreSQL
transaction, so the target holds all of it or none; ids are kept (identities BY
DEFAULT), then each identity is moved past the largest id copied. The target must be
empty: this is a move, not a merge.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from relay.store.postgres_connection import mask_dsn, migrate

# In the order foreign keys need; each with its identity column, if any.
TABLES = ("events", "deliveries", "attempts", "destinations", "audit_log", "one_time_steps")
WITH_IDENTITY = ("events", "deliveries", "attempts", "audit_log")
BATCH_ROWS = 5_000  # bounds memory whatever the history's size
_BOOLEANS = {("destinations", "enabled")}


class TargetNotEmpty(Exception):
    """The PostgreSQL store already holds rows: copying would merge two histories."""


@dataclass
class Copied:
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{count} {table}" for table, count in self.rows.items())


async def copy_sqlite_to_postgres(source: Path, dsn: str) -> Copied:
    """Copy every row of `source` into the (migrated, here if need be) empty store at `dsn`."""
    sqlite = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        sqlite.execute("BEGIN")  # one snapshot, while a server may go on writing
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            copied = Copied()
            async with conn.transaction():
                for table in TABLES:
                    if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):  # noqa: S608
                        raise TargetNotEmpty(f"{mask_dsn(dsn)} already holds {table}")
                for table in TABLES:
                    copied.rows[table] = await _copy_table(sqlite, conn, table)
                for table in WITH_IDENTITY:
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                        f" COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table}"
                    )
            return copied
        finally:
            await conn.close()
    finally:
        sqlite.close()


async def _copy_table(sqlite: sqlite3.Connection, conn: asyncpg.Connection, table: str) -> int:
    target_columns = [
        row["column_name"]
        for row in await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
    ]
    source_columns = [row[1] for row in sqlite.execute(f"PRAGMA table_info({table})")]
    columns = [name for name in source_columns if name in target_columns]
    count = 0
    for batch in _batches(sqlite, table, columns):
        await conn.copy_records_to_table(table, records=batch, columns=columns)
        count += len(batch)
    return count


def _batches(
    sqlite: sqlite3.Connection, table: str, columns: list[str]
) -> Iterator[list[tuple[Any, ...]]]:
    booleans = [index for index, name in enumerate(columns) if (table, name) in _BOOLEANS]
    cursor = sqlite.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY rowid")  # noqa: S608
    while rows := cursor.fetchmany(BATCH_ROWS):
        if booleans:
            rows = [
                tuple(bool(v) if i in booleans else v for i, v in enumerate(row)) for row in rows
            ]
        yield rows
