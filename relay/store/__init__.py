"""The durable outbox: events, decisions, attempts and destination health.

`Store` is the protocol every backend keeps; `relay.store.sqlite` is the embedded
one. Callers pass epoch milliseconds in, so clocks stay injectable.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

from relay.store.records import (
    SERVE_LEASE_OWNER,
    AttemptRecord,
    AttemptResolution,
    BackupFacts,
    Claim,
    DeliveryDetail,
    DeliveryRow,
    DeliveryStatus,
    DestinationHealth,
    HealthChange,
    HistoryFilter,
    IngestResult,
    NewEvent,
    ScrubbedEvent,
    ScrubCandidate,
    ScrubCounts,
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

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        """Commit the event and all its decision rows in one transaction, or raise."""
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
    ) -> Claim:
        """Lease up to `limit` due deliveries to `owner`, oldest first, under one new
        fencing token; in the same round trip, say when the next pending row not leased
        falls due (among `only_ids`, when given).

        `exclude_ids` are the caller's rows in flight: never claimed again, even past
        their lease, and counted against their destination's `per_destination` slots.
        Rows that cannot be read are failed here and listed in `Claim.unreadable`.
        """
        ...

    async def release_leases(self, owner: str) -> int:
        """At a serve start: hand back the leases `owner` held (that process is dead)."""
        ...

    async def record_attempt(
        self,
        attempt: AttemptRecord,
        resolution: AttemptResolution,
        destination_key: str,
        disable_after_failures: int,
        alert: NewEvent | None,
        now_ms: int,
        *,
        lease_token: str,
    ) -> HealthChange:
        """Write the attempt, move the delivery on, update health; one transaction.

        Only while the row still holds `lease_token`: otherwise nothing is written and
        `recorded` is False. `alert` (an event carrying one alert delivery) is inserted
        only if this very transaction disables the destination, so the producer hears
        of it exactly once. An outcome that cannot be stored raises StoreRejected, after
        its delivery is marked failed with the reason (so it is not claimed forever).
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
        """Finish a claimed delivery that was never sent (privacy re-check, config gone);
        False if the row no longer holds `lease_token`."""
        ...

    async def history(self, query: HistoryFilter) -> list[DeliveryRow]: ...

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None: ...

    async def requeue(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]:
        """Make these due now with a fresh schedule; return those taken. A row in flight
        (its lease live) is refused: see `leased`; so is one whose event was scrubbed."""
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

    async def count_by_status(self) -> dict[str, int]: ...

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
