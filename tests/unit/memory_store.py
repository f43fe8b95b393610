"""An in-memory `relay.store.Store` for the engine's unit tests: the seam, faked.

Like procrastinate's InMemoryConnector, it keeps the protocol's promises (leases are
fences under a fresh token, a row in flight is never claimed again, at most
`per_destination` rows of a destination count as in flight, one alert per disabling)
in plain Python, so the dispatcher and the attempt runner can be driven without SQLite
and without waiting. It holds only what the engine touches; the SQLite store's own
tests prove the real one keeps the same promises.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from relay.records import (
    SERVE_LEASE_OWNER,
    AttemptRecord,
    AttemptResolution,
    Channel,
    Claim,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    DestinationHealth,
    HealthChange,
    HealthEffect,
    IngestResult,
    NewAlert,
    NewEvent,
    Notice,
    WriteHealth,
)


@dataclass
class Row:
    id: int
    kind: DeliveryKind
    producer_id: str
    affiliate_code: str
    destination_key: str
    channel: str
    event_name: str
    hotmart_id: str
    message_id: str
    payload_json: str
    status: DeliveryStatus
    reason: str
    next_attempt_at_ms: int | None
    attempts: int = 0
    replayed_after: int = 0
    lease_until_ms: int | None = None
    lease_token: str | None = None
    lease_owner: str | None = None
    last_error: str = ""
    notification: Notice | None = None

    def claimed(self) -> ClaimedDelivery:
        assert self.lease_token is not None
        return ClaimedDelivery(
            id=self.id,
            kind=self.kind,
            producer_id=self.producer_id,
            affiliate_code=self.affiliate_code,
            destination_key=self.destination_key,
            channel=Channel(self.channel),
            event_name=self.event_name,
            message_id=self.message_id,
            attempts=self.attempts,
            replayed_after=self.replayed_after,
            payload_json=self.payload_json,
            hotmart_id=self.hotmart_id,
            lease_token=self.lease_token,
            notification=self.notification,
        )


@dataclass
class MemoryStore:
    rows: dict[int, Row] = field(default_factory=dict)
    attempts: list[AttemptRecord] = field(default_factory=list)
    health: dict[str, DestinationHealth] = field(default_factory=dict)
    claims: int = 0
    writes_waiting: int = 0  # outcome writes held by `writes_open`
    # A test holds this to keep outcome writes waiting (a slow disk), then sets it.
    writes_open: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.writes_open.set()

    # -- what the engine calls ---------------------------------------------------------

    def write_health(self) -> WriteHealth:
        return WriteHealth(last_failure=None, stuck_for_s=0.0)

    async def probe_write(self, now_ms: int) -> None:
        return None

    async def watch_for_work(self, wake: Callable[[], None]) -> None:
        return None

    async def ingest(self, event: NewEvent, now_ms: int) -> IngestResult:
        first_id = 0
        for new in event.deliveries:
            row_id = next(self._ids)
            first_id = first_id or row_id
            self.rows[row_id] = Row(
                id=row_id,
                kind=new.kind,
                producer_id=event.producer_id,
                affiliate_code=new.affiliate_code,
                destination_key=new.destination_key or "",
                channel=new.channel or "",
                event_name=event.event_name,
                hotmart_id=event.hotmart_id,
                message_id=new.message_id,
                payload_json=event.payload_json,
                status=new.status,
                reason=new.reason,
                next_attempt_at_ms=(new.due_at_ms or now_ms)
                if new.status == DeliveryStatus.PENDING
                else None,
                notification=new.notification,
            )
        sendable = sum(
            1
            for d in event.deliveries
            if d.status == DeliveryStatus.PENDING and d.due_at_ms is None
        )
        # This fake keeps no event rows: an event is known by its first delivery's id.
        return IngestResult(event.outcome, first_id, sendable)

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
        self.claims += 1
        cap = (caps or {}).get
        excluded = set(exclude_ids)
        held: dict[str, int] = {}
        for row_id in excluded:
            key = self.rows[row_id].destination_key
            held[key] = held.get(key, 0) + 1
        due = sorted(
            (r for r in self.rows.values() if self._claimable(r, now_ms, excluded, only_ids)),
            key=lambda r: (r.next_attempt_at_ms or 0, r.id),
        )
        token = f"token-{next(self._tokens)}"
        taken: list[ClaimedDelivery] = []
        for row in due:
            if len(taken) == limit or held.get(row.destination_key, 0) >= cap(
                row.destination_key, per_destination
            ):
                continue
            held[row.destination_key] = held.get(row.destination_key, 0) + 1
            row.lease_until_ms, row.lease_token, row.lease_owner = lease_until_ms, token, owner
            taken.append(row.claimed())
        return Claim(taken, self._next_due(only_ids))

    async def release_leases(self, owner: str) -> int:
        released = 0
        for row in self.rows.values():
            if row.status == DeliveryStatus.PENDING and row.lease_owner in (owner, None):
                released += row.lease_until_ms is not None
                row.lease_until_ms = row.lease_token = row.lease_owner = None
        return released

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
        self.writes_waiting += 1
        await self.writes_open.wait()
        self.writes_waiting -= 1
        row = self.rows[attempt.delivery_id]
        if row.status != DeliveryStatus.PENDING or row.lease_token != lease_token:
            return HealthChange(disabled_now=False, consecutive_failures=0, recorded=False)
        self.attempts.append(attempt)
        row.status, row.attempts = resolution.status, attempt.attempt_no
        row.next_attempt_at_ms, row.last_error = (
            resolution.next_attempt_at_ms,
            resolution.last_error,
        )
        row.lease_until_ms = row.lease_token = row.lease_owner = None
        if resolution.status != DeliveryStatus.PENDING:
            row.reason = resolution.last_error or "delivered"
        return self._health(destination_key, resolution, disable_after_failures, alert, now_ms)

    async def resolve_without_attempt(
        self,
        delivery_id: int,
        status: DeliveryStatus,
        reason: str,
        now_ms: int,
        *,
        lease_token: str,
    ) -> bool:
        row = self.rows[delivery_id]
        if row.status != DeliveryStatus.PENDING or row.lease_token != lease_token:
            return False
        row.status, row.reason, row.next_attempt_at_ms = status, reason, None
        row.lease_until_ms = row.lease_token = row.lease_owner = None
        return True

    async def destination_health(self) -> dict[str, DestinationHealth]:
        return dict(self.health)

    # -- the promises, in plain Python ---------------------------------------------------

    def _claimable(
        self, row: Row, now_ms: int, excluded: set[int], only_ids: Sequence[int] | None
    ) -> bool:
        return (
            row.status == DeliveryStatus.PENDING
            and row.next_attempt_at_ms is not None
            and row.next_attempt_at_ms <= now_ms
            and (row.lease_until_ms is None or row.lease_until_ms <= now_ms)
            and row.id not in excluded
            and (only_ids is None or row.id in only_ids)
        )

    def _next_due(self, only_ids: Sequence[int] | None) -> int | None:
        times = [
            max(r.next_attempt_at_ms or 0, r.lease_until_ms or 0)
            for r in self.rows.values()
            if r.status == DeliveryStatus.PENDING and (only_ids is None or r.id in only_ids)
        ]
        return min(times, default=None)

    def _health(
        self,
        key: str,
        resolution: AttemptResolution,
        disable_after_failures: int,
        alert: NewAlert | None,
        now_ms: int,
    ) -> HealthChange:
        effect = resolution.health
        if effect == HealthEffect.NONE:
            return HealthChange(disabled_now=False, consecutive_failures=0)
        health = self.health.get(key, DestinationHealth(key))
        if effect == HealthEffect.SUCCESS:
            self.health[key] = replace(health, consecutive_failures=0, last_success_at_ms=now_ms)
            return HealthChange(disabled_now=False, consecutive_failures=0)
        health = replace(health, last_error=resolution.last_error, last_error_at_ms=now_ms)
        failures = health.consecutive_failures + (effect == HealthEffect.FAILED)
        disable = effect == HealthEffect.GONE or (
            effect == HealthEffect.FAILED and failures >= disable_after_failures
        )
        disabled_now = disable and health.enabled
        if disabled_now:
            health = replace(health, enabled=False, disabled_reason=resolution.last_error)
        self.health[key] = replace(health, consecutive_failures=failures)
        if disabled_now and alert is not None:
            self._alert(alert, now_ms)
        return HealthChange(disabled_now=disabled_now, consecutive_failures=failures)

    def _alert(self, alert: NewAlert, now_ms: int) -> None:
        row_id = next(self._ids)
        self.rows[row_id] = Row(
            id=row_id,
            kind=DeliveryKind.ALERT,
            producer_id=alert.producer_id,
            affiliate_code="",
            destination_key=alert.destination_key,
            channel=Channel.EMAIL.value,
            event_name=alert.event_name,
            hotmart_id=alert.alert_id,
            message_id=alert.message_id,
            payload_json=alert.payload_json,
            status=DeliveryStatus.PENDING,
            reason=alert.reason,
            next_attempt_at_ms=now_ms,
        )
