"""The PostgreSQL store's plumbing: named queries made positional, errors made data,
migrations under an advisory lock, and a DSN that is never shown whole.

asyncpg (not psycopg 3): on this machine, 10,000 single-row INSERT ... RETURNING round
trips ran at 4,000-5,100/s against psycopg's 2,700-4,000/s, and a claim-like UPDATE ...
FOR UPDATE SKIP LOCKED RETURNING at 1,050-1,150/s against 740-890/s (README, "Choosing
PostgreSQL"); it also brings the pool and LISTEN the store needs, with no other package.
"""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from relay.store.queries import load_migrations, load_queries

SQL_DIR = Path(__file__).parent / "sql" / "postgres"
# `:name`, but not the second colon of a `::type` cast.
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# One key for every relay migrating any schema of a database: they queue, which is rare
# and brief, rather than race.
MIGRATION_LOCK_KEY = zlib.crc32(b"relay migrations")
# What a backup of this store is, said by `relay backup` and the store's backup().
POSTGRES_BACKUP = (
    "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, or a base "
    "backup with WAL archiving), not `relay backup`"
)
# The NOTIFY channel every instance's dispatcher listens on.
WAKE_CHANNEL = "relay_due"


@dataclass(frozen=True)
class Statement:
    """A named query with its `:name` parameters numbered as asyncpg wants them."""

    sql: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


def compile_named(sql: str) -> Statement:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Statement(_PARAM.sub(number, sql), tuple(names))


def load_statements(path: Path) -> dict[str, Statement]:
    return {name: compile_named(sql) for name, sql in load_queries(path).items()}


C = load_statements(SQL_DIR / "connection.sql")


class NotMigrated(Exception):
    """The database lacks migrations this relay needs: `relay migrate` (or serve --migrate)."""


def mask_dsn(dsn: str) -> str:
    """The DSN with its password replaced, fit for an error message; never the secret."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "postgres://***"
    if parts.password is None:
        return urlunsplit(parts._replace(query=""))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc, query=""))


def scrub_secret(text: str, dsn: str) -> str:
    """`text` with any password the DSN carries taken out (a driver may quote it)."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


# SQLSTATE classes where this one item is at fault and the store works: a constraint, a
# value PostgreSQL refuses (a NUL in text, a number out of range), a trigger's RAISE.
_ITEM_CLASSES = ("22", "23", "P0")


def is_store_fault(exc: BaseException) -> bool:
    """True if the store as a whole failed (connection lost, shut down, read-only, full,
    a timeout), so no other write can succeed now either; False if only what was being
    written is at fault."""
    if isinstance(exc, asyncpg.PostgresError):
        return not str(exc.sqlstate or "").startswith(_ITEM_CLASSES)
    # A value asyncpg could not encode is this item's fault too.
    return not isinstance(exc, UnicodeError | ValueError | TypeError | OverflowError)


_FAILURES = {
    "08": "connection lost",
    "57P": "shutting down",
    "25006": "read-only",
    "53100": "disk full",
    "53": "out of resources",
    "40": "conflict",
}


def failure_kind(exc: BaseException) -> str:
    """A fixed phrase for a store-wide failure: never the exception text."""
    state = str(getattr(exc, "sqlstate", "") or "")
    for prefix, phrase in _FAILURES.items():
        if state.startswith(prefix):
            return phrase
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):  # before OSError, its base
        return "timed out"
    if isinstance(exc, asyncpg.InterfaceError | OSError | ConnectionError):
        return "connection lost"
    return "write failed"


def rejection(exc: BaseException) -> str:
    """Why a row could not be stored: PostgreSQL's message names a constraint or a type,
    not the value; a Python error only by its type (its message may quote buyer data)."""
    if isinstance(exc, asyncpg.PostgresError):
        return f"cannot be stored: {exc.sqlstate}: {getattr(exc, 'message', '')}"
    return f"cannot be stored: {type(exc).__name__}"


async def run(conn: asyncpg.Connection, statement: Statement, params: Mapping[str, Any]) -> str:
    """Execute; the status tag (`UPDATE 3`)."""
    return str(await conn.execute(statement.sql, *statement.args(params)))


def row_count(status: str) -> int:
    """The number of rows an INSERT/UPDATE/DELETE status tag reports."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


async def schema_versions(conn: asyncpg.Connection) -> tuple[int, int]:
    """(applied, latest): the version the database has, and the newest this relay ships."""
    current = 0  # never migrated: no table yet
    if await conn.fetchval(C["schema_version_exists"].sql):
        current = int(await conn.fetchval(C["schema_version"].sql))
    latest = max((version for version, _ in load_migrations(SQL_DIR)), default=0)
    return current, latest


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the migrations the database lacks, each with its version in one transaction,
    under an advisory lock so two relays migrating at once apply each migration once."""
    applied: list[int] = []
    async with conn.transaction():
        await run(conn, C["lock_migrations"], {"key": MIGRATION_LOCK_KEY})
        await conn.execute(C["schema_version_table"].sql)
        current, _ = await schema_versions(conn)
        for version, script in load_migrations(SQL_DIR):
            if version > current:
                await conn.execute(script)
                now_ms = time.time_ns() // 1_000_000
                await run(conn, C["record_migration"], {"version": version, "now_ms": now_ms})
                applied.append(version)
    return applied


async def require_migrated(conn: asyncpg.Connection) -> None:
    current, latest = await schema_versions(conn)
    if current < latest:
        raise NotMigrated(
            f"the PostgreSQL store is at schema version {current}, this relay needs {latest}: "
            "run `relay migrate` (or `relay serve --migrate`) first"
        )
