"""The shared store: PostgreSQL through an asyncpg pool, for several relay instances.

Every method is one transaction on a pooled connection. Concurrent ingests share one
(`GroupCommit`, as on SQLite), and so do attempt outcomes: measured on this 2-core
machine it took ingest from 389 to 579 posts/s against one transaction per post (whose
commits PostgreSQL's WAL writer already groups, but not their round trips). Ingest
commits with the server's `synchronous_commit` (on: durable); dispatch bookkeeping sets
it off for its own transactions, as SQLite's NORMAL: a lost outcome is a repeated
attempt.

Several instances share one outbox: claims read `FOR UPDATE SKIP LOCKED` and lease
under a token (the fence); each instance leases as its own owner (`serve:<host>:<port>`),
releases at start only what that owner held, and only while it holds the advisory
lock of that owner (so a live twin keeps its leases); every write that makes rows due
NOTIFYs, and each instance LISTENs (`postgres_listen`).
"""

from __future__ import annotations

import json
import secrets
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

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
from relay.store import postgres_reads as reads
from relay.store.group_commit import GroupCommit, ItemFailed
from relay.store.postgres_connection import (
    POSTGRES_BACKUP,
    WAKE_CHANNEL,
    C,
    failure_kind,
    is_store_fault,
    mask_dsn,
    migrate,
    rejection,
    require_migrated,
    run,
)
from relay.store.postgres_listen import listen_for_work
from relay.store.postgres_statements import (
    execute,
    insert_event,
    read_claimed,
    record_outcome,
    rows,
    value,
)
from relay.store.rows import Outcome
from relay.store.sqlite_statements import from_row
from relay.store.write_health import WriteMonitor

T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")
Work = Callable[[asyncpg.Connection], Awaitable[T]]
POOL_MAX_SIZE = 10  # ingest and dispatch share it; PostgreSQL's default allows 100 in all
COMMAND_TIMEOUT_S = 30.0  # a statement that takes this long is a store that does not answer


@asynccontextmanager
async def open_postgres_store(
    dsn: str,
    *,
    acquire_timeout_s: float = 5.0,
    instance: str = SERVE_LEASE_OWNER,
    migrate_first: bool = False,
    server_settings: dict[str, str] | None = None,
) -> AsyncIterator[PostgresStore]:
    """Open a pool on `dsn`; apply the migrations first if asked, else refuse a database
    that lacks any (`NotMigrated`). `instance` is the lease owner a serve leases as."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=POOL_MAX_SIZE,
            command_timeout=COMMAND_TIMEOUT_S,
            server_settings=server_settings,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreUnavailable(
            f"cannot connect to {mask_dsn(dsn)}: {failure_kind(exc)} ({type(exc).__name__})"
        ) from None
    try:
        async with pool.acquire() as conn:
            if migrate_first:
                await migrate(conn)
            await require_migrated(conn)
        store = PostgresStore(
            pool,
            dsn,
            acquire_timeout_s=acquire_timeout_s,
            instance=instance,
            server_settings=server_settings,
        )
        try:
            async with store.group_commit.running(), store.outcome_commit.running():
                yield store
        finally:
            await store.close()
    finally:
        await pool.close()


class PostgresStore:
    """`relay.store.Store` on PostgreSQL; any number of instances per database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        acquire_timeout_s: float,
        instance: str,
        server_settings: dict[str, str] | None = None,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._server_settings = server_settings
        self._acquire_timeout_s = acquire_timeout_s
        self._instance = instance
        self._owner_lock: asyncpg.Connection | None = None
        self._writes = WriteMonitor()
        self.group_commit = GroupCommit(self._ingest_batch)
        self.outcome_commit = GroupCommit(self._record_batch)

    async def close(self) -> None:
        if self._owner_lock is not None:
            with suppress(Exception):
                await self._owner_lock.close()
            self._owner_lock = None

    def _owner(self, owner: str) -> str:
        """A serve leases as this instance, and each dispatcher slot of a multi-process
        serve ("serve-1") as this instance's slot; a CLI's own name stays its own."""
        if owner == SERVE_LEASE_OWNER or owner.startswith(f"{SERVE_LEASE_OWNER}-"):
            return self._instance + owner.removeprefix(SERVE_LEASE_OWNER)
        return owner

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire(timeout=self._acquire_timeout_s) as conn:
            yield conn

    async def transaction(self, work: Work[T], *, durable: bool = True) -> T:
        """Run `work` in one transaction; a failure becomes StoreUnavailable (the store)
        or StoreRejected (this item), and readiness hears of the store's."""
        with self._writes.watching():
            try:
                async with self._connection() as conn, conn.transaction():
                    if not durable:
                        await conn.execute("SET LOCAL synchronous_commit = off")
                    result = await work(conn)
            except (StoreRejected, StoreUnavailable, ItemFailed):
                raise
            except Exception as exc:
                if not is_store_fault(exc):
                    raise StoreRejected(rejection(exc)) from exc
                kind = failure_kind(exc)
                self._writes.failed(kind)
                raise StoreUnavailable(f"postgres: {kind} ({type(exc).__name__})") from exc
            self._writes.worked()
            return result

    async def read(self, work: Work[T]) -> T:
        """A read on a pooled connection; a failure is the store's (StoreUnavailable)."""
        try:
            async with self._connection() as conn:
                return await work(conn)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"postgres: {failure_kind(exc)} ({type(exc).__name__})") from exc

    def write_health(self) -> WriteHealth:
        return self._writes.health()

    async def probe_write(self, now_ms: int) -> None:
        await self.transaction(lambda c: execute(c, "write_probe", {"now_ms": now_ms}))

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        await listen_for_work(self._dsn, wake, server_settings=self._server_settings)

    # -- ingest ---------------------------------------------------------------------

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        return await self.group_commit.submit((event, now_ms))

    async def _ingest_batch(self, batch: Sequence[tuple[NewEvent, int]]) -> list[IngestResult]:
        """Concurrent ingests in one transaction, as on SQLite: one commit (one WAL flush)
        and one NOTIFY serve the batch; an item PostgreSQL refuses fails alone. Written
        in idempotency-key order, so two instances' batches holding one resend each
        lock in the same order and never deadlock."""

        async def work(conn: asyncpg.Connection) -> list[IngestResult]:
            results = await _each_in_order(
                batch,
                key=lambda item: (item[0].producer_id, item[0].hotmart_id),
                write=lambda item: insert_event(conn, *item),
            )
            if any(result.status != "duplicate" for result in results):
                await _notify(conn)
            return results

        return await self.transaction(work)

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
        caps = caps or {}
        params: dict[str, Any] = {
            "now_ms": now_ms,
            "lease_until_ms": lease_until_ms,
            "lease_token": secrets.token_hex(8),
            "lease_owner": self._owner(owner),
            "limit": limit,
            "per_destination": per_destination,
            "exclude_ids": list(exclude_ids),
            "only_ids": None if only_ids is None else list(only_ids),
            "cap_keys": list(caps),
            "cap_values": list(caps.values()),
        }

        async def work(conn: asyncpg.Connection) -> Claim:
            skipped = [row["channel"] for row in await rows(conn, "skip_disabled_due", params)]
            ids = [row["id"] for row in await rows(conn, "claim_due", params)]
            deliveries, unreadable = await read_claimed(conn, ids, now_ms) if ids else ([], [])
            if only_ids is None:
                next_due = await value(conn, "next_due", {})
            else:
                next_due = await value(conn, "next_due_of_ids", {"ids": list(only_ids)})
            return Claim(deliveries, next_due, unreadable, skipped)

        return await self.transaction(work, durable=False)

    async def release_leases(self, owner: str) -> int:
        owner = self._owner(owner)
        if not await self._hold_owner_lock(owner):
            return 0  # that owner lives on in another process: its leases are its own

        async def work(conn: asyncpg.Connection) -> int:
            released = await execute(conn, "release_leases", {"owner": owner})
            if released:
                await _notify(conn)
            return released

        return await self.transaction(work, durable=False)

    async def _hold_owner_lock(self, owner: str) -> bool:
        """Take, for the life of this store, the advisory lock that says `owner` is this
        process: held, the process that leased as `owner` before is gone."""
        if self._owner_lock is not None:
            return True
        key = zlib.crc32(f"relay lease owner {owner}".encode())
        try:
            conn = await asyncpg.connect(self._dsn, server_settings=self._server_settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"postgres: {failure_kind(exc)}") from exc
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            self._owner_lock = conn
            return True
        await conn.close()
        return False

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
            return await self.outcome_commit.submit((outcome, now_ms))
        except StoreRejected as rejected:
            reason = f"attempt {attempt.attempt_no} could not be recorded: {rejected}"
            params = {
                "id": attempt.delivery_id,
                "lease_token": lease_token,
                "reason": reason,
                "now_ms": now_ms,
            }
            await self.transaction(lambda c: execute(c, "mark_unrecordable", params))
            raise

    async def _record_batch(self, batch: Sequence[tuple[Outcome, int]]) -> list[HealthChange]:
        """Outcomes group-committed like ingest. In destination order: each outcome locks
        its destination's row, and two instances' batches must take those locks in one
        order, or they could deadlock."""
        return await self.transaction(
            lambda conn: _each_in_order(
                batch,
                key=lambda item: (item[0].destination_key, item[0].attempt.delivery_id),
                write=lambda item: record_outcome(conn, *item),
            ),
            durable=False,
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
            lambda c: execute(c, "resolve_without_attempt", params), durable=False
        )
        return bool(moved)

    # -- history and operations -----------------------------------------------------

    async def history(self, query: HistoryFilter) -> list[DeliveryRow]:
        return await self.read(lambda c: reads.history(c, query))

    async def known_statuses(self) -> list[str]:
        return await self.read(reads.known_statuses)

    async def event(self, event_row_id: int) -> EventRecord | None:
        return await self.read(lambda c: reads.event(c, event_row_id))

    async def record_audit(self, entry: NewAuditEntry, now_ms: int) -> int:
        return await self.transaction(lambda c: reads.record_audit(c, entry, now_ms))

    async def audit_log(
        self, *, producer_id: str | None = None, before_id: int | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        return await self.read(
            lambda c: reads.audit_log(c, producer_id=producer_id, before_id=before_id, limit=limit)
        )

    async def audit_entry(self, audit_id: int) -> AuditEntry | None:
        return await self.read(lambda c: reads.audit_entry(c, audit_id))

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        async def work(conn: asyncpg.Connection) -> DeliveryDetail | None:
            found = await rows(conn, "delivery_row", {"id": delivery_id})
            if not found:
                return None
            attempts = [
                from_row(AttemptRow, a, response_headers=json.loads(a["response_headers"]))
                for a in await rows(conn, "attempts_of", {"id": delivery_id})
            ]
            return DeliveryDetail(
                from_row(DeliveryRow, found[0]),
                found[0]["payload_json"],
                attempts,
            )

        return await self.read(work)

    async def requeue(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        params = {"ids": list(delivery_ids), "now_ms": now_ms}

        async def work(conn: asyncpg.Connection) -> list[int]:
            taken = sorted(row["id"] for row in await rows(conn, "requeue", params))
            if taken:
                await _notify(conn)  # the dispatchers of every instance, not only ours
            return taken

        return await self.transaction(work)

    async def _ids(self, query: str, params: dict[str, Any]) -> list[int]:
        return await self.read(lambda c: _id_list(c, query, params))

    async def leased(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        return await self._ids("leased", {"ids": list(delivery_ids), "now_ms": now_ms})

    async def settled_since_replay(self, delivery_ids: Sequence[int]) -> list[int]:
        return await self._ids("settled_since_replay", {"ids": list(delivery_ids)})

    async def delivery_ids_of_event(self, event_row_id: int) -> list[int]:
        return await self._ids("delivery_ids_of_event", {"event_id": event_row_id})

    async def failed_since(self, since_ms: int | None) -> list[int]:
        return await self._ids("failed_since", {"since_ms": since_ms})

    async def destination_health(self) -> dict[str, DestinationHealth]:
        found = await self.read(lambda c: rows(c, "destination_health"))
        return {row["key"]: from_row(DestinationHealth, row) for row in found}

    async def set_destination_enabled(
        self, key: str, enabled: bool, reason: str, now_ms: int
    ) -> None:
        params = {"key": key, "enabled": enabled, "reason": reason, "now_ms": now_ms}

        async def work(conn: asyncpg.Connection) -> None:
            await execute(conn, "ensure_destination", params)
            await execute(conn, "set_destination_enabled", params)
            if enabled:
                await _notify(conn)  # its rows may be replayed now, on any instance

        await self.transaction(work)

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
            "ids": None if ids is None else list(ids),
            "since_ms": since_ms,
            "affiliate_code": affiliate_code,
            "before_id": before_id,
            "limit": limit,
        }
        return await self.read(lambda c: reads.withheld_rows(c, params))

    async def regrant(
        self, regrants: Sequence[Regrant], replacements: Sequence[Replacement], now_ms: int
    ) -> RegrantResult:
        async def work(conn: asyncpg.Connection) -> RegrantResult:
            result = await reads.regrant(conn, regrants, replacements, now_ms)
            if result.pending:
                await _notify(conn)
            return result

        return await self.transaction(work)

    async def count_by_status(self) -> dict[str, int]:
        found = await self.read(lambda c: rows(c, "count_by_status"))
        return {row["status"]: row["deliveries"] for row in found}

    async def queue_gauges(self) -> QueueGauges:
        found = (await self.read(lambda c: rows(c, "queue_gauges")))[0]
        return QueueGauges(found["pending"], found["earliest"], found["disabled"])

    # -- retention and backup -------------------------------------------------------

    async def scrub_candidates(
        self, received_before_ms: int, after: tuple[int, int], limit: int
    ) -> list[ScrubCandidate]:
        return await self.read(
            lambda c: reads.scrub_candidates(c, received_before_ms, after, limit)
        )

    async def scrub(self, events: Sequence[ScrubbedEvent], now_ms: int) -> ScrubCounts:
        return await self.transaction(lambda c: reads.scrub(c, events, now_ms))

    async def erase_overwritten(self, wait_ms: int) -> bool:
        """PostgreSQL keeps a rewritten row's old version until VACUUM reclaims it; a plain
        VACUUM of the tables scrub rewrites marks that space free (it is overwritten by
        later rows, not zeroed: the README says so). False if it could not run now."""
        try:
            async with self._connection() as conn:
                await conn.execute(f"SET lock_timeout = {int(wait_ms)}")
                await conn.execute("VACUUM events, attempts")
                await conn.execute("RESET lock_timeout")
        except asyncpg.LockNotAvailableError:
            return False
        except Exception as exc:
            raise StoreUnavailable(f"postgres: {failure_kind(exc)}") from exc
        return True

    async def backup(self, target: Path) -> BackupFacts:
        raise StoreUnavailable(POSTGRES_BACKUP)

    # -- sale recovery --------------------------------------------------------------

    async def follow_up_facts(self, producer_id: str, transaction_code: str) -> FollowUpFacts:
        return await self.read(lambda c: reads.follow_up_facts(c, producer_id, transaction_code))

    async def settling_event(self, producer_id: str, transaction_code: str) -> str | None:
        return await self.read(lambda c: reads.settling_event(c, producer_id, transaction_code))

    async def recovery_figures(
        self,
        since_ms: int,
        *,
        producer_id: str | None = None,
        affiliate_code: str | None = None,
    ) -> list[RecoveryFigures]:
        return await self.read(
            lambda c: reads.recovery_figures(c, since_ms, producer_id, affiliate_code)
        )


async def _each_in_order(
    batch: Sequence[Item],
    *,
    key: Callable[[Item], tuple[str, Any]],
    write: Callable[[Item], Awaitable[Result]],
) -> list[Result]:
    """Write a batch's items in `key` order, in the open transaction; the results in the
    batch's order. An item PostgreSQL refuses becomes `ItemFailed` (its index in the
    batch), so the group commit writes the rest again without it."""
    results: dict[int, Result] = {}
    for index in sorted(range(len(batch)), key=lambda i: key(batch[i])):
        try:
            results[index] = await write(batch[index])
        except Exception as exc:
            if is_store_fault(exc):
                raise
            raise ItemFailed(index, StoreRejected(rejection(exc))) from exc
    return [results[index] for index in range(len(batch))]


async def _notify(conn: asyncpg.Connection) -> None:
    """Wake every instance's dispatcher when this transaction commits."""
    await run(conn, C["notify"], {"channel": WAKE_CHANNEL})


async def _id_list(conn: asyncpg.Connection, query: str, params: dict[str, Any]) -> list[int]:
    return [row["id"] for row in await rows(conn, query, params)]
