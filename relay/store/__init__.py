"""The durable outbox: events, decisions, attempts and destination health.

`Store` is the protocol every backend keeps: `relay.store.sqlite` is the embedded one,
and a PostgreSQL one implements the same methods with the same guarantees;
`relay.store.backend.open_store` chooses. It speaks of rows only (ids, keys, statuses,
leases), never of the dispatcher's bookkeeping. Callers pass epoch milliseconds in, so
clocks stay injectable.

What every backend guarantees:

- One transaction per call. Each method that writes commits all of its rows or none,
  and a caller that hears an error knows nothing was committed, except where a method
  says otherwise (`record_attempt` marks its row failed in a second transaction).
- Leases are fences. A claim leases rows under one new random token; a row is claimable
  only while pending, due and not under a live lease. Every outcome write names the
  token it holds and changes nothing unless the row still holds it, so a holder whose
  lease ran out and was taken over can never record. Postgres claims with
  `SELECT ... FOR UPDATE SKIP LOCKED`, so concurrent dispatchers never wait on, nor
  take, each other's rows.
- Idempotency. An event is stored once per (producer, Hotmart id): a second ingest is a
  `duplicate` and adds nothing. A row's message id never changes, whatever happens to it.
- Errors are data: `StoreUnavailable` means the store as a whole cannot commit now
  (locked, full, read-only, gone), so ingest answers 503; `StoreRejected` means this one
  item cannot be stored while the rest of its batch was.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from relay.records import (
    SERVE_LEASE_OWNER,
    AttemptRecord,
    AttemptResolution,
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


class StoreUnavailable(Exception):
    """The store could not commit; ingest answers 503 so Hotmart sends again."""


class StoreRejected(StoreUnavailable):
    """This one item cannot be written (the store works: the rest of its batch was)."""


class Store(Protocol):
    def write_health(self) -> WriteHealth:
        """The last write's outcome and how long a write has been waiting: state only,
        answered at once, so readiness never waits behind a lock."""
        ...

    async def probe_write(self, now_ms: int) -> None:
        """A tiny durable write, so readiness learns that writes work (again)."""
        ...

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process may have made rows due, until cancelled:
        PostgreSQL LISTENs (with a fallback timer); SQLite returns at once, as a CLI
        there wakes the one server with a signal (`relay.instance`)."""
        ...

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        """Commit the event and all its decision rows in one transaction, durably (it
        survives a power loss), or raise. Idempotent on (producer, Hotmart id): a second
        ingest answers `duplicate` with the first one's row id and adds nothing.
        Pending rows are due at `now_ms`, or at their `due_at_ms` (a reminder); only the
        first count in `IngestResult.deliveries`. Concurrent ingests may share one commit.

        Sale recovery, in the same transaction, so the order events arrive in never
        matters: an event of `SETTLING_EVENTS` cancels the reminders of its (producer,
        transaction) still pending and not in flight, with the reason; a reminder of a
        transaction for which such an event is already stored is stored cancelled."""
        ...

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
        """Lease up to `limit` due deliveries to `owner`, oldest first, under one new
        fencing token valid until `lease_until_ms`; in the same transaction, say when the
        next pending row not leased falls due (among `only_ids`, when given).

        A row is due when it is pending, its `next_attempt_at_ms` has come and no live
        lease holds it. Never more rows of one destination count as in flight than its
        cap: `caps[key]` when given (the dispatcher's adaptive caps), else
        `per_destination`. `exclude_ids` (the caller's rows in flight) are never claimed
        again, even past their lease, and take their destination's slots first, so a
        destination they fill is left out entirely. Before claiming, due rows of a
        disabled destination (not alerts, which are about it) are skipped with the
        reason, and their channels listed in `Claim.skipped`. Rows that cannot be read
        are failed here, with the reason, and listed in `Claim.unreadable`, so one bad
        row never stops a claim.

        Fair across destinations: each destination's next row ranks by how many rows of
        it would then be in flight, then by due time, so free slots go first to the
        destinations with the fewest in flight; within a destination, oldest first.

        The cost does not grow with the backlog (issue 10), which is how a backend must
        build it. The SQLite design (migration 0008, queries.sql "Claims"):

        - `destination_queue (key, next_due_ms)` holds, per destination, a lower bound of
          when its first claimable row falls due. Whatever makes a row claimable moves
          it earlier, never later: the writes that insert pending rows upsert it
          themselves (`queue_destinations`; an insert trigger cost ingest 70 us per
          event in SQLite, through its statement journal), and a trigger on UPDATE of
          status, due time, lease or key covers the rest (a retry scheduled, a lease
          released, a requeue, a regrant, a rekey). A bound may be early: the claim
          that visits the destination corrects it.
        - An index `(destination_key, next_attempt_at_ms) WHERE status = 'pending'`
          gives each destination its own range in due order.
        - A claim (1) marks due the destinations of rows whose lease ran out (the head
          of the `lease_until_ms` index: a lease that expires writes nothing); (2)
          counts `exclude_ids` per destination; (3) reads the due queue rows, earliest
          first, `limit` plus the number of held destinations of them; (4) visits the
          open ones with the fewest held first, at most `limit` of them, reading the
          first claimable rows of each (free slots + 1); (5) ranks them as above and
          leases the best `limit`; (6) moves each visited destination's bound to its
          first row not taken, or drops it when none is left.
        - `only_ids` (a CLI burst) reads those rows by key and leaves the queue alone.

        Postgres: the same tables and triggers; step 4 is one statement with a
        `LATERAL (... ORDER BY next_attempt_at_ms, id LIMIT n FOR UPDATE SKIP LOCKED)`
        per queue row, so concurrent dispatchers never wait on, nor take, each other's
        rows, and step 6 moves a bound only with `WHERE next_due_ms = <the value read>`
        (a concurrent trigger's earlier bound wins).
        """
        ...

    async def release_leases(self, owner: str) -> int:
        """At a serve start: hand back the leases `owner` held (that process is dead,
        which the caller has proved), so its rows are due again at once; return how
        many. Leases of other owners (a CLI replay still running) run out by time."""
        ...

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
        """Write the attempt, move the delivery on (`resolution`), release its lease and
        update its destination's health; one transaction.

        Fenced: only while the row still holds `lease_token`, else nothing is written
        and `recorded` is False. Health moves as `resolution.health` says; a failure
        run reaching `disable_after_failures`, or a 410, disables the destination, and
        `alert` is stored (a delivery of kind alert) only if this very transaction
        disabled it, so the producer hears of it exactly once however many attempts
        fail at the same moment. An outcome that cannot be stored raises StoreRejected,
        after its delivery is marked failed with the reason in a transaction of its own
        (so it is not claimed forever). Outcomes may share one commit; they need not
        be durable at once (a lost one is a repeated attempt, which at-least-once allows).
        """
        ...

    async def resolve_without_attempt(
        self,
        delivery_id: int,
        status: DeliveryStatus,
        reason: str,
        now_ms: int,
        *,
        lease_token: str,
    ) -> bool:
        """Finish a claimed delivery that was never sent (privacy re-check, config gone)
        with `status` and `reason`, releasing its lease; fenced like `record_attempt`:
        False, and nothing written, if the row no longer holds `lease_token`."""
        ...

    async def history(self, query: HistoryFilter) -> list[DeliveryRow]:
        """Deliveries matching every filter given, newest first (keyset: ids below
        `before_id`), each with the code of its last attempt. Every filter is served by
        an index: a page costs the same on a million rows as on a hundred."""
        ...

    async def known_statuses(self) -> list[str]:
        """Every status some delivery has now, without reading every row."""
        ...

    async def event(self, event_row_id: int) -> EventRecord | None:
        """One stored event as it arrived (its rows: `history` with `event_row_id`)."""
        ...

    async def record_audit(self, entry: NewAuditEntry, now_ms: int) -> int:
        """Keep what an operator did, durably, before it is reported done; its id."""
        ...

    async def audit_log(
        self, *, producer_id: str | None = None, before_id: int | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """The audit trail, newest first (keyset: ids below `before_id`)."""
        ...

    async def audit_entry(self, audit_id: int) -> AuditEntry | None: ...

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None: ...

    async def requeue(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        """Make these due now with a fresh schedule (attempts before it no longer count
        toward giving up), keeping each row's message id; return those taken. Taken are
        rows sent or failed, or skipped because their destination was disabled; a row in
        flight (its lease live) is refused: see `leased`. One transaction."""
        ...

    async def leased(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        """Those of these rows in flight now: their lease is live."""
        ...

    async def settled_since_replay(self, delivery_ids: Sequence[int]) -> list[int]:
        """Those of these rows whose outcome is known since they were queued: final, or
        attempted since (a retry may be due). How a CLI waits for the server's attempt."""
        ...

    async def delivery_ids_of_event(self, event_row_id: int) -> list[int]: ...

    async def failed_since(self, since_ms: int | None) -> list[int]: ...

    async def destination_health(self) -> dict[str, DestinationHealth]: ...

    async def set_destination_enabled(
        self, key: str, enabled: bool, reason: str, now_ms: int
    ) -> None: ...

    async def withheld(
        self,
        *,
        ids: Sequence[int] | None = None,
        since_ms: int | None = None,
        affiliate_code: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[WithheldRow]:
        """Withheld notifications (among `ids`, created since, of one affiliate) with their
        stored events: newest first, at most `limit` of them, with ids below `before_id`."""
        ...

    async def regrant(
        self, regrants: Sequence[Regrant], replacements: Sequence[Replacement], now_ms: int
    ) -> RegrantResult:
        """Apply decisions made again for withheld rows, in one transaction: each is due
        now or still withheld, or is replaced by new rows of its event (never a second
        row for one destination of an event). A row no longer withheld when this runs
        (another replay took it meanwhile) is left alone, so running it twice is safe."""
        ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def queue_gauges(self) -> QueueGauges:
        """The backlog's size and head, and how many destinations are disabled, for a
        metrics scrape: reads only, each through an index (or a table of destinations),
        so their cost does not grow with history; only the count grows with the backlog."""
        ...

    # -- retention and backup (issue 8) ---------------------------------------------

    async def scrub_candidates(
        self, received_before_ms: int, after: tuple[int, int], limit: int
    ) -> list[ScrubCandidate]:
        """Up to `limit` events received before `received_before_ms` that still hold buyer
        data and have no pending delivery, in (received_at_ms, row id) order after `after`."""
        ...

    async def scrub(self, events: Sequence[ScrubbedEvent], now_ms: int) -> ScrubCounts:
        """In one transaction: give each event its scrubbed payload, mark it scrubbed, and
        empty what its attempts sent and received (payload, response excerpt, headers).
        An event scrubbed already, or with a delivery pending again, is left alone."""
        ...

    async def erase_overwritten(self, wait_ms: int) -> bool:
        """Make what `scrub` overwrote unreadable in the store's files too, not only in its
        rows, waiting at most `wait_ms` for other processes' reads and writes; False if
        that could not be finished now (try again later)."""
        ...

    async def backup(self, target: Path) -> BackupFacts:
        """Copy the store into `target`, an existing empty file, as of one moment: every
        transaction committed before it and none after, while writers carry on. The copy
        stands alone (one file) and is checked; `BackupFacts.problems` says what is wrong."""
        ...

    # -- sale recovery (issue 11) ---------------------------------------------------

    async def follow_up_facts(self, producer_id: str, transaction_code: str) -> FollowUpFacts:
        """The transaction's slip rows that were delivered, sent at least once or are on
        their way (pending), the paid and expired notices it has already made, and
        whether it was paid."""
        ...

    async def settling_event(self, producer_id: str, transaction_code: str) -> str | None:
        """The name of the first stored event that settled the transaction, if any."""
        ...

    async def recovery_figures(
        self,
        since_ms: int,
        *,
        producer_id: str | None = None,
        affiliate_code: str | None = None,
    ) -> list[RecoveryFigures]:
        """For each affiliate of each producer, then each producer as a whole (its row's
        `affiliate_code` is None): the slips notified since `since_ms`, once per
        transaction, and what became of them. Reads only the slips of the window through
        an index, and each one's outcome by its transaction: never the whole history."""
        ...
