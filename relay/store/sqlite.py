"""The embedded store: one SQLite file in WAL mode, reached through aiosqlite.

Every operation runs as one plain function on aiosqlite's worker thread: one hop per
transaction instead of one per statement (DESIGN.md measured the hops as costly as
the commit; `sqlite_connection` says how, on public API). Concurrent ingests and
attempt outcomes are group-committed: whoever arrives while a batch is being written
rides in the next one, so one fsync serves many.

No write waits on another process's lock for longer than `busy_timeout` from when its
caller asked, even queued behind other writes on the one thread: each transaction's
busy wait is what is left of its oldest caller's deadline (issue 6, defect 9).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiosqlite

from relay.records import (
    SERVE_LEASE_OWNER,
    AttemptRecord,
    AttemptResolution,
    AttemptRow,
    AuditEntry,
    BackupFacts,
    Claim,
    DeliveryDetail,
    DeliveryRow,
    DeliveryStatus,
    DestinationHealth,
    EventRecord,
    FollowUpFacts,
    HealthChange,
    HistoryFilter,
    IngestResult,
    NewAlert,
    NewAuditEntry,
    NewEvent,
    QueueGauges,
    RecoveryFigures,
    Regrant,
    RegrantResult,
    Replacement,
    ScrubbedEvent,
    ScrubCandidate,
    ScrubCounts,
    WithheldRow,
    WriteHealth,
)
from relay.store import StoreRejected, StoreUnavailable
from relay.store import sqlite_history as browse
from relay.store import sqlite_maintenance as maintenance
from relay.store import sqlite_recovery as recovery
from relay.store.group_commit import GroupCommit, ItemFailed
from relay.store.rows import Outcome
from relay.store.sqlite_claim import ClaimRequest, claim
from relay.store.sqlite_connection import (
    UnitConnection,
    connect,
    create_private,
    failure_kind,
    is_store_fault,
    prepare,
    run_unit,
    transaction,
)
from relay.store.sqlite_regrant import regrant, rekey_positional, withheld_rows
from relay.store.sqlite_statements import (
    SQL_DIR,
    Q,
    from_row,
    insert_event,
    named_rows,
    record_outcomes,
    rejection,
    write_each,
)
from relay.store.write_health import WriteMonitor
from relay.store.write_lock import WriteLock

T = TypeVar("T")
DEFAULT_BUSY_TIMEOUT_MS = 5000  # see config.DEFAULT_BUSY_TIMEOUT_S


@asynccontextmanager
async def open_sqlite_store(
    path: Path,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    factory: type[UnitConnection] = UnitConnection,
    positional_keys: Mapping[str, str] | None = None,
) -> AsyncIterator[SqliteStore]:
    """Open (creating and migrating) the database; always close it, or the process hangs.

    `positional_keys` maps each `p/a/index` key to its id key under the config in force:
    given it, the first open rekeys what an older relay stored (once per store).
    """
    await asyncio.to_thread(create_private, path)
    lock = WriteLock(path)
    conn = await connect(path, factory)
    try:
        store = SqliteStore(conn, lock, busy_timeout_s=busy_timeout_ms / 1000)
        await store.run(lambda c: _locked(lock, lambda: prepare(c, busy_timeout_ms, SQL_DIR)))
        if positional_keys is not None:
            await store.rekey_positional(positional_keys, time.time_ns() // 1_000_000)
        async with store.group_commit.running(), store.outcome_commit.running():
            yield store
    finally:
        # aiosqlite's worker thread is not a daemon: an open connection blocks exit.
        await conn.close()
        lock.close()


def _locked(lock: WriteLock, fn: Callable[[], T]) -> T:
    """Migrations write too: two processes opening one new store migrate it in turn."""
    with lock.held():
        return fn()


class SqliteStore:
    """`relay.store.Store` on SQLite; single serving instance per database file."""

    def __init__(
        self, conn: aiosqlite.Connection, lock: WriteLock, *, busy_timeout_s: float
    ) -> None:
        self._conn = conn
        self._lock = lock
        self._busy_timeout_s = busy_timeout_s
        self._writes = WriteMonitor()
        self.group_commit = GroupCommit(self._ingest_batch)
        self.outcome_commit = GroupCommit(self._record_batch)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` with the raw connection on aiosqlite's thread: one hop, any statements."""
        return await run_unit(self._conn, fn)

    def _deadline(self) -> float:
        """When a write asked for now must have its answer, lock or no lock."""
        return time.monotonic() + self._busy_timeout_s

    async def transaction(
        self,
        work: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = True,
        deadline: float | None = None,
    ) -> T:
        deadline = self._deadline() if deadline is None else deadline
        with self._writes.watching():
            try:
                result, wrote = await self.run(
                    lambda c: transaction(c, work, durable, deadline, self._lock)
                )
            except ItemFailed:
                raise  # one item of a batch: the store itself works
            except sqlite3.Error as exc:
                if not is_store_fault(exc):
                    raise StoreRejected(rejection(exc)) from exc
                self._writes.failed(failure_kind(exc))
                raise StoreUnavailable(f"sqlite: {exc}") from exc
            if wrote:  # only a write that wrote proves the store can write
                self._writes.worked()
            return result

    def write_health(self) -> WriteHealth:
        return self._writes.health()

    async def probe_write(self, now_ms: int) -> None:
        await self.transaction(lambda c: c.execute(Q["write_probe"], {"now_ms": now_ms}))

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        return  # one server per file: a CLI wakes it with a signal (relay.instance)

    # -- ingest ---------------------------------------------------------------------

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        return await self.group_commit.submit((event, now_ms, self._deadline()))

    async def _ingest_batch(
        self, batch: Sequence[tuple[NewEvent, int, float]]
    ) -> list[IngestResult]:
        return await self.transaction(
            lambda c: write_each(batch, lambda item: insert_event(c, item[0], item[1])),
            deadline=min(deadline for _, _, deadline in batch),
        )

    # -- dispatch -------------------------------------------------------------------

    async def claim_due(
        self,
        now_ms: int,
        lease_until_ms: int,
        limit: int,
        per_destination: int,
        *,
        exclude_ids: Collection[int] = (),
        only_ids: Sequence[int] | None = None,
        owner: str = SERVE_LEASE_OWNER,
        caps: Mapping[str, int] | None = None,
    ) -> Claim:
        request = ClaimRequest(
            now_ms=now_ms,
            lease_until_ms=lease_until_ms,
            lease_token=secrets.token_hex(8),
            owner=owner,
            limit=limit,
            per_destination=per_destination,
            caps=caps or {},
            exclude_ids=exclude_ids,
            only_ids=only_ids,
        )
        return await self.transaction(lambda c: claim(c, request), durable=False)

    async def release_leases(self, owner: str) -> int:
        return await self.transaction(
            lambda c: c.execute(Q["release_leases"], {"owner": owner}).rowcount, durable=False
        )

    async def record_attempt(
        self,
        attempt: AttemptRecord,
        resolution: AttemptResolution,
        destination_key: str,
        disable_after_failures: int,
        alert: NewAlert | None,
        now_ms: int,
        *,
        lease_token: str,
    ) -> HealthChange:
        outcome = Outcome(
            attempt, resolution, destination_key, disable_after_failures, alert, lease_token
        )
        try:
            return await self.outcome_commit.submit((outcome, now_ms, self._deadline()))
        except StoreRejected as rejected:
            # In its own small transaction, so the row is not claimed again forever.
            reason = f"attempt {attempt.attempt_no} could not be recorded: {rejected}"
            params = {
                "id": attempt.delivery_id,
                "lease_token": lease_token,
                "reason": reason,
                "now_ms": now_ms,
            }
            await self.transaction(lambda c: c.execute(Q["mark_unrecordable"], params))
            raise

    async def _record_batch(
        self, batch: Sequence[tuple[Outcome, int, float]]
    ) -> list[HealthChange]:
        # Outcomes are group-committed like ingest: under load one fsync records many.
        return await self.transaction(
            lambda c: record_outcomes(c, batch),
            durable=False,
            deadline=min(deadline for _, _, deadline in batch),
        )

    async def resolve_without_attempt(
        self,
        delivery_id: int,
        status: DeliveryStatus,
        reason: str,
        now_ms: int,
        *,
        lease_token: str,
    ) -> bool:
        params = {
            "id": delivery_id,
            "status": status.value,
            "reason": reason,
            "now_ms": now_ms,
            "lease_token": lease_token,
        }
        moved = await self.transaction(
            lambda c: c.execute(Q["resolve_without_attempt"], params).rowcount, durable=False
        )
        return bool(moved)

    # -- history and operations -----------------------------------------------------

    async def history(self, query: HistoryFilter) -> list[DeliveryRow]:
        return await self.run(lambda c: browse.history(c, query))

    async def known_statuses(self) -> list[str]:
        return await self.run(browse.known_statuses)

    async def event(self, event_row_id: int) -> EventRecord | None:
        return await self.run(lambda c: browse.event(c, event_row_id))

    async def record_audit(self, entry: NewAuditEntry, now_ms: int) -> int:
        return await self.transaction(lambda c: browse.record_audit(c, entry, now_ms))

    async def audit_log(
        self, *, producer_id: str | None = None, before_id: int | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        return await self.run(
            lambda c: browse.audit_log(c, producer_id=producer_id, before_id=before_id, limit=limit)
        )

    async def audit_entry(self, audit_id: int) -> AuditEntry | None:
        return await self.run(lambda c: browse.audit_entry(c, audit_id))

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        def work(conn: sqlite3.Connection) -> DeliveryDetail | None:
            found = named_rows(conn, "delivery_row", {"id": delivery_id})
            if not found:
                return None
            attempts = [
                from_row(AttemptRow, a, response_headers=json.loads(a["response_headers"]))
                for a in named_rows(conn, "attempts_of", {"id": delivery_id})
            ]
            return DeliveryDetail(
                from_row(DeliveryRow, found[0]), found[0]["payload_json"], attempts
            )

        return await self.run(work)

    async def requeue(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        params = {"ids": json.dumps(list(delivery_ids)), "now_ms": now_ms}
        rows = await self.transaction(lambda c: c.execute(Q["requeue"], params).fetchall())
        return sorted(row[0] for row in rows)

    async def leased(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        params = {"ids": json.dumps(list(delivery_ids)), "now_ms": now_ms}
        rows = await self.run(lambda c: c.execute(Q["leased"], params).fetchall())
        return [row[0] for row in rows]

    async def settled_since_replay(self, delivery_ids: Sequence[int]) -> list[int]:
        params = {"ids": json.dumps(list(delivery_ids))}
        rows = await self.run(lambda c: c.execute(Q["settled_since_replay"], params).fetchall())
        return [row[0] for row in rows]

    async def delivery_ids_of_event(self, event_row_id: int) -> list[int]:
        params = {"event_id": event_row_id}
        rows = await self.run(lambda c: c.execute(Q["delivery_ids_of_event"], params).fetchall())
        return [row[0] for row in rows]

    async def failed_since(self, since_ms: int | None) -> list[int]:
        params = {"since_ms": since_ms}
        rows = await self.run(lambda c: c.execute(Q["failed_since"], params).fetchall())
        return [row[0] for row in rows]

    async def destination_health(self) -> dict[str, DestinationHealth]:
        rows = await self.run(lambda c: named_rows(c, "destination_health"))
        return {
            row["key"]: from_row(DestinationHealth, row, enabled=bool(row["enabled"]))
            for row in rows
        }

    async def set_destination_enabled(
        self, key: str, enabled: bool, reason: str, now_ms: int
    ) -> None:
        params = {"key": key, "enabled": int(enabled), "reason": reason, "now_ms": now_ms}

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(Q["ensure_destination"], params)
            conn.execute(Q["set_destination_enabled"], params)

        await self.transaction(work)

    async def rekey_positional(self, new_by_old: Mapping[str, str], now_ms: int) -> None:
        """Once per store: move the positional keys an older relay wrote to id keys."""
        rekeyed = await self.transaction(lambda c: rekey_positional(c, new_by_old, now_ms))
        if rekeyed is not None:
            rekeyed.log()

    async def withheld(
        self,
        *,
        ids: Sequence[int] | None = None,
        since_ms: int | None = None,
        affiliate_code: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[WithheldRow]:
        params = {
            "ids": None if ids is None else json.dumps(list(ids)),
            "since_ms": since_ms,
            "affiliate_code": affiliate_code,
            "before_id": before_id,
            "limit": limit,
        }
        return await self.run(lambda c: withheld_rows(c, params))

    async def regrant(
        self, regrants: Sequence[Regrant], replacements: Sequence[Replacement], now_ms: int
    ) -> RegrantResult:
        return await self.transaction(lambda c: regrant(c, regrants, replacements, now_ms))

    async def count_by_status(self) -> dict[str, int]:
        rows = await self.run(lambda c: named_rows(c, "count_by_status"))
        return {row["status"]: row["deliveries"] for row in rows}

    async def queue_gauges(self) -> QueueGauges:
        def work(conn: sqlite3.Connection) -> QueueGauges:
            (pending,) = conn.execute(Q["pending_count"]).fetchone()
            (earliest_due_at_ms,) = conn.execute(Q["earliest_due"]).fetchone()
            (disabled,) = conn.execute(Q["destinations_disabled"]).fetchone()
            return QueueGauges(pending, earliest_due_at_ms, disabled)

        return await self.run(work)

    # -- retention and backup -------------------------------------------------------

    async def scrub_candidates(
        self, received_before_ms: int, after: tuple[int, int], limit: int
    ) -> list[ScrubCandidate]:
        return await self.run(
            lambda c: maintenance.scrub_candidates(c, received_before_ms, after, limit)
        )

    async def scrub(self, events: Sequence[ScrubbedEvent], now_ms: int) -> ScrubCounts:
        return await self.transaction(lambda c: maintenance.scrub(c, events, now_ms))

    async def erase_overwritten(self, wait_ms: int) -> bool:
        busy_timeout_ms = int(self._busy_timeout_s * 1000)
        try:
            return await self.run(
                lambda c: maintenance.truncate_wal(c, wait_ms, restore_ms=busy_timeout_ms)
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def backup(self, target: Path) -> BackupFacts:
        copy = await asyncio.to_thread(maintenance.open_copy, target)
        try:
            # pages=0: the whole database in one step, under one read snapshot, so the copy
            # is a moment of the store. In WAL mode that reader holds up no writer; a copy
            # made in steps would start over at every write another process commits.
            await self._conn.backup(copy, pages=0)
        finally:
            await asyncio.to_thread(copy.close)
        return await asyncio.to_thread(maintenance.finish_copy, target)

    # -- sale recovery (issue 11) ---------------------------------------------------

    async def follow_up_facts(self, producer_id: str, transaction_code: str) -> FollowUpFacts:
        return await self.run(lambda c: recovery.follow_up_facts(c, producer_id, transaction_code))

    async def settling_event(self, producer_id: str, transaction_code: str) -> str | None:
        return await self.run(lambda c: recovery.settling_event(c, producer_id, transaction_code))

    async def recovery_figures(
        self,
        since_ms: int,
        *,
        producer_id: str | None = None,
        affiliate_code: str | None = None,
    ) -> list[RecoveryFigures]:
        return await self.run(
            lambda c: recovery.recovery_figures(c, since_ms, producer_id, affiliate_code)
        )
