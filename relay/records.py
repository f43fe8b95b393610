"""The outbox's records: plain data that crosses the store boundary; no backend types leak out.

They sit below every layer that speaks of deliveries (the pure core plans them, the
store keeps them, the engine moves them), so they import nothing of the relay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # due now or at next_attempt_at_ms
    DELIVERED = "delivered"
    FAILED = "failed"  # retries ran out or a permanent error; kept for replay
    WITHHELD = "withheld"  # privacy gate said no
    SKIPPED = "skipped"  # not subscribed, out of scope, no slip, destination disabled
    IGNORED = "ignored"  # the event named no affiliate
    # A withheld row decided again and replaced by rows per destination; its reason names them.
    SUPERSEDED = "superseded"
    # A scheduled reminder no longer needed (the purchase was paid, canceled, refunded or
    # expired first); its reason says which. Final: never sent, never replayed.
    CANCELLED = "cancelled"


class DeliveryKind(StrEnum):
    NOTIFICATION = "notification"
    TEST = "test"  # relay send-test
    ALERT = "alert"  # destination disabled: email to the producer


class Notice(StrEnum):
    """What a notification to an affiliate says (the webhook body's `notification`)."""

    SLIP = "slip"  # a slip was printed: its link and code (PURCHASE_BILLET_PRINTED)
    REMINDER = "reminder"  # sale recovery: the slip is still unpaid and expires soon
    PAID = "paid"  # sale recovery: a slip notified to this affiliate was paid
    EXPIRED = "expired"  # sale recovery: a slip notified to this affiliate expired unpaid
    EVENT = "event"  # any other subscribed event, worded generically


# Sale recovery's own notices: each follows a slip notified to the affiliate, none is an
# event the affiliate subscribed to.
FOLLOW_UPS = frozenset({Notice.REMINDER, Notice.PAID, Notice.EXPIRED})


class Channel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


# Who holds a lease. A serve start releases what an earlier serve held (the single-instance
# lock proves it dead); a CLI replay's leases run out by time, as it may still be running.
SERVE_LEASE_OWNER = "serve"


def cli_lease_owner(pid: int) -> str:
    return f"cli:{pid}"


def dispatcher_lease_owner(slot: int) -> str:
    """Each dispatcher slot of a multi-process serve leases as its own owner: a restarted
    slot hands back what it held when it died (release_leases), never what the other
    slots hold now. Slot 0 is "serve", as the one-process relay, so either mode finds the
    other's leases. A shared store (PostgreSQL) makes each name its instance's own."""
    return SERVE_LEASE_OWNER if slot == 0 else f"{SERVE_LEASE_OWNER}-{slot}"


@dataclass(frozen=True)
class NewDelivery:
    """One decision row to insert with its event."""

    status: DeliveryStatus
    reason: str
    message_id: str
    affiliate_code: str = ""
    destination_key: str | None = None
    channel: str | None = None
    kind: DeliveryKind = DeliveryKind.NOTIFICATION
    # What it says; None: what its event says (`relay.outbox.new_event` fills it in).
    notification: Notice | None = None
    # When a pending row falls due; None: at once. A reminder is due before its slip expires.
    due_at_ms: int | None = None


@dataclass(frozen=True)
class NewEvent:
    producer_id: str
    hotmart_id: str
    event_name: str
    source: str
    transaction_code: str
    product_id: str
    payload_json: str
    deliveries: tuple[NewDelivery, ...]

    @property
    def outcome(self) -> str:
        return (
            "ignored"
            if all(d.status == DeliveryStatus.IGNORED for d in self.deliveries)
            else ("accepted")
        )


@dataclass(frozen=True)
class NewAlert:
    """A producer alert, written with the outcome that disables its destination.

    The store keeps it as a delivery of kind `alert` to `destination_key`, the
    destination it is about, with `payload_json` (a `relay.alerts.DestinationDisabled`)
    as what it carries; `alert_id` is unique among the producer's events.
    """

    producer_id: str
    alert_id: str
    event_name: str
    destination_key: str
    message_id: str
    reason: str
    payload_json: str


@dataclass(frozen=True)
class WithheldRow:
    """A withheld delivery with what deciding it again needs: its event, as stored."""

    id: int
    event_row_id: int
    producer_id: str
    affiliate_code: str
    destination_key: str | None
    payload_json: str
    # Every destination this event already has a row for, for this affiliate (any status).
    event_keys: frozenset[str]


@dataclass(frozen=True)
class Regrant:
    """One withheld row decided again in place: due now (PENDING), or still WITHHELD."""

    delivery_id: int
    status: DeliveryStatus
    reason: str
    channel: str | None = None


@dataclass(frozen=True)
class Replacement:
    """Withheld rows (no destination, or one no longer in the config) replaced by new rows
    of their event, one per destination the affiliate has now."""

    delivery_ids: tuple[int, ...]
    event_row_id: int
    deliveries: tuple[NewDelivery, ...]


@dataclass(frozen=True)
class RegrantResult:
    """What a regrant did; rows that were no longer withheld when it ran are left out."""

    pending: list[int] = field(default_factory=list)  # due now: sent like a replay
    withheld: list[tuple[int, str]] = field(default_factory=list)  # (id, the new reason)
    replaced: list[tuple[int, list[int]]] = field(default_factory=list)  # (old id, new ids)


@dataclass(frozen=True)
class IngestResult:
    status: str  # accepted | duplicate | ignored
    event_row_id: int
    deliveries: int  # rows that will be sent


@dataclass(frozen=True)
class ClaimedDelivery:
    """A pending delivery leased to one dispatcher, with the event it carries."""

    id: int
    kind: DeliveryKind
    producer_id: str
    affiliate_code: str
    destination_key: str
    channel: Channel
    event_name: str
    message_id: str
    attempts: int  # made before this one
    replayed_after: int  # attempts made before the last replay; the schedule counts from here
    payload_json: str
    hotmart_id: str  # the event's id at Hotmart, for logs that follow one event
    lease_token: str  # this claim's fence: outcome writes present it
    notification: Notice | None = None  # None for an alert


@dataclass(frozen=True)
class UnreadableRow:
    """A due row the claim could not read (unknown kind or channel, payload not JSON):
    failed inside the claim with `reason`, so it can never stop the dispatcher."""

    id: int
    reason: str


@dataclass(frozen=True)
class Claim:
    """What one claim leased, and when the next unleased pending row falls due."""

    deliveries: list[ClaimedDelivery]
    next_due_at_ms: int | None
    unreadable: list[UnreadableRow] = field(default_factory=list)
    # The channel of each due row skipped because its destination is disabled.
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AttemptRecord:
    delivery_id: int
    attempt_no: int
    started_at_ms: int
    latency_ms: float
    outcome: str  # success | transient | permanent
    status_code: int | None
    response_excerpt: str
    response_headers: dict[str, str]
    request_payload: str
    detail: str


class HealthEffect(StrEnum):
    """What an attempt means for its destination's health."""

    SUCCESS = "success"  # resets the failure run
    RETRYING = "retrying"  # a transient failure with retries left: no verdict yet
    FAILED = "failed"  # the delivery failed for good: one more in the run
    GONE = "gone"  # the receiver said 410: disable now
    NONE = "none"  # alerts and skips do not touch health


@dataclass(frozen=True)
class AttemptResolution:
    """Where the delivery goes after an attempt, and its effect on the destination."""

    status: DeliveryStatus
    next_attempt_at_ms: int | None
    last_error: str
    health: HealthEffect


@dataclass(frozen=True)
class DestinationHealth:
    key: str
    enabled: bool = True
    disabled_reason: str = ""
    consecutive_failures: int = 0
    last_success_at_ms: int | None = None
    last_error: str = ""
    last_error_at_ms: int | None = None


@dataclass(frozen=True)
class HealthChange:
    """What an outcome write did. `recorded` is False when the fence refused it: the row
    no longer held the writer's lease, so nothing was written."""

    disabled_now: bool
    consecutive_failures: int
    recorded: bool = True


@dataclass(frozen=True)
class HistoryFilter:
    """Which deliveries to list, newest first; every filter given must hold (AND).

    Each filter is served by an index, so a page costs the same on a history of a
    million rows as on a hundred (tests/admin/test_history_queries.py reads the plans).
    """

    status: str | None = None
    affiliate_code: str | None = None
    event_name: str | None = None
    channel: str | None = None
    since_ms: int | None = None
    before_id: int | None = None  # keyset pagination: rows with id < before_id
    limit: int = 50
    transaction_code: str | None = None  # Hotmart's purchase transaction, e.g. HP1764271200123
    hotmart_id: str | None = None  # Hotmart's event id
    producer_id: str | None = None
    statuses: tuple[str, ...] = ()  # any of these (the admin page's "sent" tab)
    until_ms: int | None = None  # created before this
    event_row_id: int | None = None  # the rows of one stored event
    notification: str | None = None  # slip, reminder, paid, expired or event


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    kind: str
    status: str
    reason: str
    producer_id: str
    affiliate_code: str
    destination_key: str | None
    channel: str | None
    event_name: str
    hotmart_id: str
    transaction_code: str
    message_id: str
    attempts: int
    next_attempt_at_ms: int | None
    last_error: str
    created_at_ms: int
    updated_at_ms: int
    event_row_id: int = 0  # the stored event's row id (the admin's events page)
    last_status_code: int | None = None  # HTTP status or SMTP reply of the last attempt
    notification: str | None = None  # what it says (relay.records.Notice); None for an alert


@dataclass(frozen=True)
class AttemptRow:
    attempt_no: int
    started_at_ms: int
    latency_ms: float
    outcome: str
    status_code: int | None
    response_excerpt: str
    response_headers: dict[str, str]
    request_payload: str
    detail: str


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: DeliveryRow
    event_payload_json: str
    attempts: list[AttemptRow] = field(default_factory=list)


@dataclass(frozen=True)
class QueueGauges:
    """What a metrics scrape reads from the store: the backlog and disabled destinations."""

    pending: int  # deliveries pending: due, in flight or scheduled for a retry
    earliest_due_at_ms: int | None  # when the pending row due earliest fell (or falls) due
    destinations_disabled: int


@dataclass(frozen=True)
class EventRecord:
    """One stored event as it arrived (its payload normalised), for the events page."""

    id: int
    producer_id: str
    hotmart_id: str
    event_name: str
    source: str  # "2.0.0" | "v1" | "send-test" | "relay" (a producer alert)
    outcome: str
    transaction_code: str
    product_id: str
    payload_json: str
    received_at_ms: int
    scrubbed_at_ms: int | None  # its buyer data was purged past retention then


@dataclass(frozen=True)
class NewAuditEntry:
    """What an operator did through the admin page or API: never a secret or buyer data."""

    action: str  # replay | replay-failed | send-test | enable | disable | reveal | login
    via: str  # page | api
    remote: str  # the peer address, and what X-Forwarded-For claimed, if anything
    producer_id: str = ""  # whose data it touched, when one producer's
    target: str = ""  # a destination key, an affiliate code, a date
    delivery_ids: tuple[int, ...] = ()
    outcome: str = ""  # what came of it, in words


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at_ms: int
    action: str
    via: str
    remote: str
    producer_id: str
    target: str
    delivery_ids: tuple[int, ...]
    outcome: str


@dataclass(frozen=True)
class WriteHealth:
    """What readiness knows of the store's writes, read from state without waiting on it."""

    last_failure: str | None  # None: the last write to finish worked; else e.g. "disk full"
    stuck_for_s: float  # how long the oldest write still in progress has waited; 0 if none


@dataclass(frozen=True)
class ScrubCandidate:
    """An event past retention that still holds buyer data and has nothing left to send."""

    event_row_id: int
    received_at_ms: int
    hotmart_id: str
    event_name: str
    payload_json: str


@dataclass(frozen=True)
class ScrubbedEvent:
    """An event's payload with the buyer and slip data taken out, ready to be written."""

    event_row_id: int
    payload_json: str


@dataclass(frozen=True)
class ScrubCounts:
    events: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class BackupFacts:
    """What a backup copy holds, read back from the copy itself."""

    events: int
    deliveries: int
    size_bytes: int
    problems: tuple[str, ...]  # what `PRAGMA integrity_check` found; empty when sound


# -- sale recovery (issue 11) ------------------------------------------------------------


@dataclass(frozen=True)
class NotifiedSlip:
    """A slip row of a transaction that reached its destination, was sent at least once,
    or is on its way there (queued or in flight); never one withheld or skipped."""

    delivery_id: int
    affiliate_code: str
    destination_key: str
    channel: str


@dataclass(frozen=True)
class FollowUpFacts:
    """What the store knows of one transaction when a paid or expired event arrives."""

    notified: tuple[NotifiedSlip, ...] = ()  # oldest first
    sent: frozenset[tuple[str, Notice]] = frozenset()  # (destination key, follow-up) rows made
    paid: bool = False  # a PURCHASE_APPROVED or PURCHASE_COMPLETE is stored


@dataclass(frozen=True)
class RecoveryFigures:
    """Slips notified to one affiliate (or, with `affiliate_code` None, all of a
    producer's affiliates) and what became of them."""

    producer_id: str
    affiliate_code: str | None
    notified: int  # transactions whose slip reached the affiliate (or was sent)
    paid: int  # of those, approved or complete
    expired: int  # of those, PURCHASE_EXPIRED and never paid
    median_ms_to_pay: float | None  # from the slip to its payment, as the relay heard them

    @property
    def open(self) -> int:
        """Neither paid nor expired (yet): still open, or canceled or refunded."""
        return self.notified - self.paid - self.expired
