"""The durable outbox: events, decisions, attempts and destination health.

`Store` is the protocol every backend keeps; `relay.store.sqlite` is the embedded
one. Callers pass epoch milliseconds in, so clocks stay injectable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from relay.store.records import (
    AttemptRecord,
    AttemptResolution,
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


class StoreUnavailable(Exception):
    """The store could not commit; ingest answers 503 so Hotmart sends again."""


class Store(Protocol):
    async def ping(self) -> None: ...

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        """Commit the event and all its decision rows in one transaction, or raise."""
        ...

    async def claim_due(
        self,
        now_ms: int,
        lease_until_ms: int,
        limit: int,
        per_destination: int,
        in_flight: Mapping[str, int] | None = None,
        only_ids: Sequence[int] | None = None,
    ) -> Claim:
        """Lease up to `limit` due deliveries, oldest first, at most `per_destination`
        in flight per destination counting `in_flight`; in the same round trip, say
        when the next pending row not leased falls due."""
        ...

    async def release_all_leases(self) -> int:
        """After a crash: every lease belongs to a dead process (single-instance store)."""
        ...

    async def record_attempt(
        self,
        attempt: AttemptRecord,
        resolution: AttemptResolution,
        destination_key: str,
        disable_after_failures: int,
        alert: NewEvent | None,
        now_ms: int,
    ) -> HealthChange:
        """Write the attempt, move the delivery on, update health; one transaction.

        `alert` (an event carrying one alert delivery) is inserted only if this very
        transaction disables the destination, so the producer hears of it exactly once.
        """
        ...

    async def resolve_without_attempt(
        self, delivery_id: int, status: DeliveryStatus, reason: str, now_ms: int
    ) -> None:
        """Finish a claimed delivery that was never sent (privacy re-check, config gone)."""
        ...

    async def history(self, query: HistoryFilter) -> list[DeliveryRow]: ...

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None: ...

    async def requeue(self, delivery_ids: Sequence[int], now_ms: int) -> list[int]: ...

    async def delivery_ids_of_event(self, event_row_id: int) -> list[int]: ...

    async def failed_since(self, since_ms: int | None) -> list[int]: ...

    async def destination_health(self) -> dict[str, DestinationHealth]: ...

    async def set_destination_enabled(
        self, key: str, enabled: bool, reason: str, now_ms: int
    ) -> None: ...

    async def count_by_status(self) -> dict[str, int]: ...
