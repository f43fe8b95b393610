"""What an attempt's result means, pure: the record kept, where the delivery goes next,
its effect on the destination's health, and the bounds every attempt keeps.

`relay.attempt` does the I/O (render, send, write); everything here is plain functions
and constants that tests drive directly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from relay.config import DeliveryConfig
from relay.decide import Outcome, decide
from relay.hotmart import Event
from relay.messages import EmailMessageSpec, WebhookMessage
from relay.outcomes import AttemptReport, DeliveryError, Fault, PermanentError, clip_utf8
from relay.records import (
    AttemptRecord,
    AttemptResolution,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthEffect,
)
from relay.retry import next_retry
from relay.targets import Target

# The budget of one attempt, everything up to its outcome write: render, the alert's
# store read, waits for a pool slot (SMTP connection, HTTP connector) and the send. The
# channel's timeout bounds one request, but SMTP applies it per command and pool waits
# have none: twice the timeout, plus room to render, covers a slow but working receiver.
ATTEMPT_BUDGET_TIMEOUTS = 2
ATTEMPT_BUDGET_SLACK_S = 5.0
# After the budget, the outcome write may wait on the store: behind the batch being
# written, then for its own, then (if it cannot be stored) to mark the row failed, each
# at most busy_timeout. The lease covers those and this margin for a slow disk.
OUTCOME_WRITE_WAITS = 3
LEASE_MARGIN_S = 10.0
# An outgoing webhook body or email (text and HTML) larger than this is a failure of
# ours, never sent: a slip notification is a few kB, so this only stops a runaway render.
MAX_OUTGOING_BYTES = 256 * 1024
# What a stored attempt keeps, at most, of what was sent and of what came back: enough
# to debug, and no input can make one attempt row large.
MAX_STORED_PAYLOAD_BYTES = 64 * 1024
MAX_STORED_RESPONSE_BYTES = 20_000
MAX_STORED_DETAIL_BYTES = 2_000


@dataclass(frozen=True)
class AttemptBounds:
    budget_s: float  # one attempt, up to its outcome write
    lease_s: float  # the lease its claim takes: the budget, the outcome write, a margin


def attempt_bounds(delivery: DeliveryConfig, busy_timeout_s: float) -> AttemptBounds:
    """The lease is derived from the budget, so it never runs out while an attempt runs."""
    budget_s = ATTEMPT_BUDGET_TIMEOUTS * delivery.timeout_s + ATTEMPT_BUDGET_SLACK_S
    lease_s = budget_s + OUTCOME_WRITE_WAITS * busy_timeout_s + LEASE_MARGIN_S
    return AttemptBounds(budget_s=budget_s, lease_s=lease_s)


@dataclass(frozen=True)
class Sent:
    """An attempt made (or failed before sending): what to record."""

    started_at_ms: int
    latency_ms: float
    payload: str
    report: AttemptReport
    error: DeliveryError | None


@dataclass(frozen=True)
class Unsent:
    """A delivery finished without an attempt: the gate said no, or its config is gone."""

    status: DeliveryStatus
    reason: str


def check_size(outgoing: WebhookMessage | EmailMessageSpec) -> None:
    """A render over MAX_OUTGOING_BYTES is never sent: a permanent failure of ours."""
    if isinstance(outgoing, WebhookMessage):
        size, what = len(outgoing.body), "webhook body"
    else:
        size, what = len(outgoing.text.encode()) + len(outgoing.html.encode()), "email"
    if size > MAX_OUTGOING_BYTES:
        raise PermanentError(
            f"rendered {what} is {size} bytes, over the {MAX_OUTGOING_BYTES}-byte bound",
            fault=Fault.OURS,
        )


def attempt_record(delivery_id: int, attempt_no: int, sent: Sent) -> AttemptRecord:
    """The attempt as stored: every text cut to its bound, and marked where it was cut."""
    error, report = sent.error, sent.report
    if error is None:
        outcome = "success"
    else:
        outcome = "permanent" if isinstance(error, PermanentError) else "transient"
    return AttemptRecord(
        delivery_id=delivery_id,
        attempt_no=attempt_no,
        started_at_ms=sent.started_at_ms,
        latency_ms=round(sent.latency_ms, 3),
        outcome=outcome,
        status_code=report.status_code,
        response_excerpt=clip_utf8(
            report.response_excerpt, MAX_STORED_RESPONSE_BYTES, cut=report.response_cut
        ),
        response_headers={
            name: clip_utf8(value, MAX_STORED_DETAIL_BYTES)
            for name, value in report.response_headers.items()
        },
        request_payload=clip_utf8(sent.payload, MAX_STORED_PAYLOAD_BYTES),
        detail=clip_utf8(error.reason if error else report.detail, MAX_STORED_DETAIL_BYTES),
    )


def resolve(
    delivery: ClaimedDelivery,
    attempt_no: int,
    error: DeliveryError | None,
    retry_delays_s: Sequence[float],
    now_ms: int,
    rng: random.Random,
) -> AttemptResolution:
    """Where the delivery goes after this attempt, and what it means for its destination."""
    # Tests and alerts don't judge health; nor does a fault of ours or of the event.
    counts = delivery.kind == DeliveryKind.NOTIFICATION and (
        error is None or error.counts_against_destination
    )
    if error is None:
        health = HealthEffect.SUCCESS if counts else HealthEffect.NONE
        return AttemptResolution(DeliveryStatus.DELIVERED, None, "", health)
    decision = next_retry(attempt_no - delivery.replayed_after, retry_delays_s, error, rng)
    if not decision.give_up:
        health = HealthEffect.RETRYING if counts else HealthEffect.NONE
        reason = clip_utf8(error.reason, MAX_STORED_DETAIL_BYTES)
        return AttemptResolution(
            DeliveryStatus.PENDING, now_ms + int(decision.delay_s * 1000), reason, health
        )
    gone = isinstance(error, PermanentError) and error.disable_destination
    health = (HealthEffect.GONE if gone else HealthEffect.FAILED) if counts else HealthEffect.NONE
    reason = clip_utf8(decision.reason, MAX_STORED_DETAIL_BYTES)
    return AttemptResolution(DeliveryStatus.FAILED, None, reason, health)


def refusal_now(target: Target, event: Event, destination_key: str) -> Unsent | None:
    """The privacy gate again, under the config in force now; None means: send."""
    verdict = next(
        (d for d in decide(target.producer, event) if d.destination_key == destination_key), None
    )
    if verdict is None:
        return Unsent(DeliveryStatus.WITHHELD, "at send time: affiliate no longer named")
    if verdict.outcome == Outcome.DELIVER:
        return None
    status = (
        DeliveryStatus.WITHHELD if verdict.outcome == Outcome.WITHHELD else DeliveryStatus.SKIPPED
    )
    return Unsent(status, f"at send time: {verdict.reason}")


def outcome_word(status: DeliveryStatus) -> str:
    """How an attempt line names where the delivery went."""
    return "retrying" if status == DeliveryStatus.PENDING else status.value


def iso_utc_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
