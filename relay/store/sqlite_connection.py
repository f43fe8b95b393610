"""One thread hop per transaction on aiosqlite's public API, and what a failure means.

aiosqlite runs each call on its worker thread, and a hop costs about as much as the
commit (DESIGN.md), so a transaction of many statements must not be many hops. It has
no public "run this function on your thread", but it does call the connection's own
`execute` there (`execute_fetchall`), and `sqlite3.connect(factory=...)` lets that
connection be ours: handed a `Unit` (a str that carries a function), its `execute` runs
the function with the connection and returns the result as the only row. Every other
statement is plain sqlite3. This replaces aiosqlite's private `_execute`.

Writers in several processes (`relay serve` with `delivery.workers`, a CLI replay) queue
on a kernel lock of their own around each write transaction (relay.store.write_lock),
not on SQLite's busy handler.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from relay.store.queries import load_migrations, load_queries
from relay.store.write_lock import WriteLock

T = TypeVar("T")
# Setting up a connection and framing a transaction: SQL kept with the rest, in sql/.
C = load_queries(Path(__file__).parent / "sql" / "sqlite" / "connection.sql")


class Unit(str):
    """A function to run on the connection's thread, dressed as SQL for aiosqlite."""

    fn: Callable[[sqlite3.Connection], Any]

    def __new__(cls, fn: Callable[[sqlite3.Connection], Any]) -> Unit:
        unit = super().__new__(cls, "-- relay: a unit of work, run on the connection's thread")
        unit.fn = fn
        return unit


class _Ran:
    """What `execute_fetchall` reads back: the unit's result as its only row."""

    def __init__(self, result: Any) -> None:
        self._result = result

    def fetchall(self) -> list[Any]:
        return [self._result]


class UnitConnection(sqlite3.Connection):
    """A sqlite3 connection whose `execute` also runs a `Unit`; the factory we connect with.

    Tests subclass it to inject faults where SQLite itself would raise them.
    """

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        if isinstance(sql, Unit):
            return _Ran(sql.fn(self))
        return super().execute(sql, parameters)


async def connect(
    path: Path, factory: type[UnitConnection] = UnitConnection
) -> aiosqlite.Connection:
    # Autocommit (isolation_level None): every transaction is our explicit BEGIN ... COMMIT.
    return await aiosqlite.connect(path, isolation_level=None, factory=factory)


async def run_unit(conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run `fn` with the raw connection on aiosqlite's thread: one hop, any statements."""
    rows = await conn.execute_fetchall(Unit(fn))
    return cast(T, next(iter(rows)))


def is_store_fault(exc: BaseException) -> bool:
    """True if the store as a whole failed (locked, full, read-only, I/O, corrupt), so no
    other write can succeed now either; False if only what was being written is at fault
    (a constraint, a value SQLite cannot take, a string with a lone surrogate)."""
    item_faults = (
        sqlite3.IntegrityError,  # a constraint or a trigger refused this row
        sqlite3.DataError,  # a string or blob over SQLite's length limit
        sqlite3.InterfaceError,
        sqlite3.ProgrammingError,  # a value sqlite3 cannot bind
    )
    if isinstance(exc, item_faults):
        return False
    return isinstance(exc, sqlite3.Error)


# SQLite's result codes, named by Python 3.11+ on each sqlite3.Error, as readiness says them.
_FAILURES = {
    "SQLITE_FULL": "disk full",
    "SQLITE_BUSY": "locked",
    "SQLITE_LOCKED": "locked",
    "SQLITE_READONLY": "read-only",
    "SQLITE_IOERR": "I/O error",
    "SQLITE_CORRUPT": "corrupt",
    "SQLITE_NOTADB": "corrupt",
    "SQLITE_CANTOPEN": "cannot open",
}


def failure_kind(exc: BaseException) -> str:
    """A fixed phrase for a store-wide failure: never the exception text."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    for code, phrase in _FAILURES.items():
        if name == code or name.startswith(code + "_"):
            return phrase
    return "write failed"


def create_private(path: Path) -> None:
    """Buyer data lives here: readable by the relay's own user only. SQLite gives its
    -wal and -shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def prepare(conn: sqlite3.Connection, busy_timeout_ms: int, migrations: Path) -> None:
    """Settings and migrations, once at open."""
    conn.execute(C["busy_timeout"].format(ms=int(busy_timeout_ms)))
    conn.execute(C["journal_mode"])
    conn.execute(C["foreign_keys"])
    conn.execute(C["secure_delete"])
    conn.execute(C["schema_version_table"])
    (current,) = conn.execute(C["schema_version"]).fetchone()
    for version, script in load_migrations(migrations):
        if version > current:
            conn.executescript(
                C["apply_migration"].format(
                    script=script, version=int(version), now_ms=time.time_ns() // 1_000_000
                )
            )


def transaction(
    conn: sqlite3.Connection,
    work: Callable[[sqlite3.Connection], T],
    durable: bool,
    deadline: float,
    lock: WriteLock,
) -> tuple[T, bool]:
    """Run `work` in one BEGIN IMMEDIATE ... COMMIT, rolled back if anything fails, under
    the relay's write lock.

    Also say whether it wrote anything: a transaction that changed nothing commits even
    on a full disk, so only one that wrote proves the store can write.
    """
    with lock.held(deadline):
        return _transaction(conn, work, durable, deadline)


def _transaction(
    conn: sqlite3.Connection,
    work: Callable[[sqlite3.Connection], T],
    durable: bool,
    deadline: float,
) -> tuple[T, bool]:
    # Every relay writer takes the write lock first, so SQLite's own lock is held only
    # by someone else (an operator's sqlite3 shell): wait for that one, too, only as
    # long as the oldest caller has left.
    conn.execute(C["busy_timeout"].format(ms=max(0, int((deadline - time.monotonic()) * 1000))))
    # FULL fsyncs the WAL at commit: an accepted event survives power loss. Dispatch
    # bookkeeping (leases, attempt outcomes) uses NORMAL: it survives a process crash,
    # and after a power loss the worst case is a repeated attempt with the same message
    # id, which at-least-once already allows. The next FULL commit syncs it anyway.
    conn.execute(C["synchronous_full"] if durable else C["synchronous_normal"])
    conn.execute(C["begin"])
    changes_before = conn.total_changes
    try:
        result = work(conn)
        wrote = conn.total_changes > changes_before
        conn.execute(C["commit"])
    except BaseException:
        if conn.in_transaction:
            conn.execute(C["rollback"])
        raise
    return result, wrote
