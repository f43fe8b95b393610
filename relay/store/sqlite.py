"""The embedded store: one SQLite file in WAL mode, reached through aiosqlite.

Every operation runs as one plain function on aiosqlite's worker thread: one hop per
transaction instead of one per statement (DESIGN.md measured the hops as costly as
the commit). Concurrent ingests are group-committed: whoever arrives while a batch is
being written rides in the next one, so one fsync serves many events.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from relay.store import StoreUnavailable
from relay.store.group_commit import GroupCommit
from relay.store.queries import load_migrations
from relay.store.records import (
    AttemptRecord,
    AttemptResolution,
    AttemptRow,
    Claim,
    DeliveryDetail,
    DeliveryRow,
    DeliveryStatus,
    DestinationHealth,
    HealthChange,
    HistoryFilter,
    IngestResult,
    NewEvent,
)
from relay.store.sqlite_statements import (
    SQL_DIR,
    Outcome,
    Q,
    claimed_delivery,
    insert_event,
    record_outcome,
)

T = TypeVar("T")
# A claim looks at this many due rows (times the slots free) to fill them fairly across
# destinations; bounded so a backlog of millions costs the same as one of hundreds.
CLAIM_SCAN_FACTOR = 4
CLAIM_SCAN_MIN = 256
DEFAULT_BUSY_TIMEOUT_MS = 5000  # see config.DEFAULT_BUSY_TIMEOUT_S


@asynccontextmanager
async def open_sqlite_store(
    path: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
) -> AsyncIterator[SqliteStore]:
    """Open (creating and migrating) the database; always close it, or the process hangs."""
    await asyncio.to_thread(_create_private, path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        store = SqliteStore(conn)
        await store.run(lambda c: _prepare(c, busy_timeout_ms))
        async with store.group_commit.running(), store.outcome_commit.running():
            yield store
    finally:
        # aiosqlite's worker thread is not a daemon: an open connection blocks exit.
        await conn.close()


def _create_private(path: Path) -> None:
    """Buyer data lives here: readable by the relay's own user only. SQLite gives its
    -wal and -shm files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _prepare(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)"
    )
    current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    for version, script in load_migrations(SQL_DIR):
        if version > current:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nINSERT INTO schema_version VALUES "
                f"({version}, {time.time_ns() // 1_000_000});\nCOMMIT;"
            )


def _transaction(
    conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], durable: bool
) -> T:
    # FULL fsyncs the WAL at commit: an accepted event survives power loss. Dispatch
    # bookkeeping (leases, attempt outcomes) uses NORMAL: it survives a process crash,
    # and after a power loss the worst case is a repeated attempt with the same message
    # id, which at-least-once already allows. The next FULL commit syncs it anyway.
    conn.execute("PRAGMA synchronous = FULL" if durable else "PRAGMA synchronous = NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SqliteStore:
    """`relay.store.Store` on SQLite; single serving instance per database file."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.group_commit = GroupCommit(self._ingest_batch)
        self.outcome_commit = GroupCommit(self._record_batch)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the raw connection on aiosqlite's thread: one hop, however many
        statements. aiosqlite has no public hook for this, so we use its private
        `_execute` (pinned to <0.23 in pyproject; covered by every store test)."""
        conn = self._conn
        result: T = await conn._execute(lambda: fn(conn._conn))  # type: ignore[no-untyped-call]
        return result

    async def transaction(
        self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True
    ) -> T:
        try:
            return await self.run(lambda c: _transaction(c, work, durable))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def ping(self) -> None:
        await self.run(lambda c: c.execute("SELECT 1").fetchone())

    # -- ingest ---------------------------------------------------------------------

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        return await self.group_commit.submit((event, now_ms))

    async def _ingest_batch(self, batch: Sequence[tuple[NewEvent, int]]) -> list[IngestResult]:
        return await self.transaction(lambda c: [insert_event(c, e, now) for e, now in batch])

    # -- dispatch -------------------------------------------------------------------

    async def claim_due(
        self,
        now_ms: int,
        lease_until_ms: int,
        limit: int,
        per_destination: int,
        in_flight: Mapping[str, int] | None = None,
        only_ids: Sequence[int] | None = None,
    ) -> Claim:
        params = {
            "now_ms": now_ms,
            "lease_until_ms": lease_until_ms,
            "limit": limit,
            "per_destination": per_destination,
            "scan_limit": max(limit * CLAIM_SCAN_FACTOR, CLAIM_SCAN_MIN),
            "in_flight": json.dumps(dict(in_flight or {})),
            "only_ids": None if only_ids is None else json.dumps(list(only_ids)),
        }

        def work(conn: sqlite3.Connection) -> Claim:
            conn.execute(Q["skip_disabled_due"], params)
            ids = [row[0] for row in conn.execute(Q["claim_due"], params)]
            rows = (
                conn.execute(Q["claimed_rows"], {"ids": json.dumps(ids)}).fetchall() if ids else []
            )
            next_due = conn.execute(Q["next_due"]).fetchone()[0]
            return Claim([claimed_delivery(row) for row in rows], next_due)

        return await self.transaction(work, durable=False)

    async def release_all_leases(self) -> int:
        return await self.transaction(
            lambda c: c.execute(Q["release_all_leases"]).rowcount, durable=False
        )

    async def record_attempt(
        self,
        attempt: AttemptRecord,
        resolution: AttemptResolution,
        destination_key: str,
        disable_after_failures: int,
        alert: NewEvent | None,
        now_ms: int,
    ) -> HealthChange:
        outcome = Outcome(attempt, resolution, destination_key, disable_after_failures, alert)
        return await self.outcome_commit.submit((outcome, now_ms))

    async def _record_batch(self, batch: Sequence[tuple[Outcome, int]]) -> list[HealthChange]:
        # Outcomes are group-committed like ingest: under load one fsync records many.
        return await self.transaction(
            lambda c: [record_outcome(c, o, now) for o, now in batch], durable=False
        )

    async def resolve_without_attempt(
        self, delivery_id: int, status: DeliveryStatus, reason: str, now_ms: int
    ) -> None:
        """Finish a claimed delivery that was never sent (privacy re-check, config gone)."""
        sql = (
            "UPDATE deliveries SET status = :status, reason = :reason, next_attempt_at_ms = NULL,"
            " lease_until_ms = NULL, updated_at_ms = :now_ms WHERE id = :id"
        )
        params = {"status": status.value, "reason": reason, "now_ms": now_ms, "id": delivery_id}
        await self.transaction(lambda c: c.execute(sql, params), durable=False)

    # -- history and operations -----------------------------------------------------

    async def history(self, query: HistoryFilter) -> list[DeliveryRow]:
        params = {
            "status": query.status,
            "affiliate_code": query.affiliate_code,
            "event_name": query.event_name,
            "channel": query.channel,
            "since_ms": query.since_ms,
            "before_id": query.before_id,
            "limit": query.limit,
            "transaction_code": query.transaction_code,
            "hotmart_id": query.hotmart_id,
        }
        rows = await self.run(lambda c: c.execute(Q["history"], params).fetchall())
        return [DeliveryRow(*row) for row in rows]

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        def work(conn: sqlite3.Connection) -> DeliveryDetail | None:
            row = conn.execute(Q["delivery_row"], {"id": delivery_id}).fetchone()
            if row is None:
                return None
            attempts = [
                AttemptRow(
                    attempt_no=a[0],
                    started_at_ms=a[1],
                    latency_ms=a[2],
                    outcome=a[3],
                    status_code=a[4],
                    response_excerpt=a[5],
                    response_headers=json.loads(a[6]),
                    request_payload=a[7],
                    detail=a[8],
                )
                for a in conn.execute(Q["attempts_of"], {"id": delivery_id})
            ]
            return DeliveryDetail(DeliveryRow(*row[:-1]), row[-1], attempts)

        return await self.run(work)

    async def requeue(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        params = {"ids": json.dumps(list(delivery_ids)), "now_ms": now_ms}
        rows = await self.transaction(lambda c: c.execute(Q["requeue"], params).fetchall())
        return sorted(row[0] for row in rows)

    async def delivery_ids_of_event(self, event_row_id: int) -> list[int]:
        sql = "SELECT id FROM deliveries WHERE event_id = :event_id ORDER BY id"
        rows = await self.run(lambda c: c.execute(sql, {"event_id": event_row_id}).fetchall())
        return [row[0] for row in rows]

    async def failed_since(self, since_ms: int | None) -> list[int]:
        params = {"since_ms": since_ms}
        rows = await self.run(lambda c: c.execute(Q["failed_since"], params).fetchall())
        return [row[0] for row in rows]

    async def destination_health(self) -> dict[str, DestinationHealth]:
        rows = await self.run(lambda c: c.execute(Q["destination_health"]).fetchall())
        return {row[0]: DestinationHealth(row[0], bool(row[1]), *row[2:]) for row in rows}

    async def set_destination_enabled(
        self, key: str, enabled: bool, reason: str, now_ms: int
    ) -> None:
        params = {"key": key, "enabled": int(enabled), "reason": reason, "now_ms": now_ms}

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(Q["ensure_destination"], params)
            conn.execute(Q["set_destination_enabled"], params)

        await self.transaction(work)

    async def count_by_status(self) -> dict[str, int]:
        rows = await self.run(lambda c: c.execute(Q["count_by_status"]).fetchall())
        return {row[0]: row[1] for row in rows}
