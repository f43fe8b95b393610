"""What both backends write, as plain values: the parameters of their named statements
and the rows they derive, so SQLite and PostgreSQL cannot drift apart on them.

No I/O and no SQL here: each backend binds these to its own statements.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from relay.records import (
    AttemptRecord,
    AttemptResolution,
    Channel,
    DeliveryKind,
    DeliveryStatus,
    NewAlert,
    NewAuditEntry,
    NewDelivery,
    NewEvent,
    Notice,
    Regrant,
    Replacement,
)

ALERT_SOURCE = "relay"  # the `source` of an alert's event: the relay itself, not Hotmart


@dataclass(frozen=True)
class Outcome:
    """One attempt's result waiting in the outcome group commit to be recorded."""

    attempt: AttemptRecord
    resolution: AttemptResolution
    destination_key: str
    disable_after_failures: int
    alert: NewAlert | None
    lease_token: str


def event_params(event: NewEvent) -> dict[str, Any]:
    return {
        "producer_id": event.producer_id,
        "hotmart_id": event.hotmart_id,
        "event_name": event.event_name,
        "source": event.source,
        "outcome": event.outcome,
        "transaction_code": event.transaction_code,
        "product_id": event.product_id,
        "payload_json": event.payload_json,
    }


def delivery_params(
    event_row_id: int, event: NewEvent, delivery: NewDelivery, now_ms: int
) -> dict[str, Any]:
    """An ingested decision row; pending rows are due now, or at their `due_at_ms`."""
    pending = delivery.status == DeliveryStatus.PENDING
    return {
        "event_id": event_row_id,
        "kind": delivery.kind.value,
        "producer_id": event.producer_id,
        "affiliate_code": delivery.affiliate_code,
        "destination_key": delivery.destination_key,
        "channel": delivery.channel,
        "event_name": event.event_name,
        "status": delivery.status.value,
        "reason": delivery.reason,
        "message_id": delivery.message_id,
        "next_attempt_at_ms": (delivery.due_at_ms or now_ms) if pending else None,
        "now_ms": now_ms,
        "notification": delivery.notification,
    }


def sendable(deliveries: Sequence[NewDelivery]) -> int:
    """What goes out now; a reminder is scheduled, and counted when it falls due."""
    return sum(1 for d in deliveries if d.status == DeliveryStatus.PENDING and d.due_at_ms is None)


def reminders_cancelled(deliveries: Sequence[NewDelivery], reason: str) -> list[NewDelivery]:
    """A purchase settled before its reminders were stored: they are stored cancelled."""
    return [
        replace(d, status=DeliveryStatus.CANCELLED, reason=reason, due_at_ms=None)
        if d.notification == Notice.REMINDER
        else d
        for d in deliveries
    ]


def alert_event(alert: NewAlert) -> NewEvent:
    """An alert is kept as the relay's own event (source "relay") with one pending
    delivery of kind `alert` to the destination it is about."""
    return NewEvent(
        producer_id=alert.producer_id,
        hotmart_id=alert.alert_id,
        event_name=alert.event_name,
        source=ALERT_SOURCE,
        transaction_code="",
        product_id="",
        payload_json=alert.payload_json,
        deliveries=(
            NewDelivery(
                status=DeliveryStatus.PENDING,
                reason=alert.reason,
                message_id=alert.message_id,
                destination_key=alert.destination_key,
                channel=Channel.EMAIL.value,
                kind=DeliveryKind.ALERT,
            ),
        ),
    )


def resolve_params(outcome: Outcome, now_ms: int) -> dict[str, Any]:
    """The fenced update that moves a delivery on after its attempt."""
    attempt, resolution = outcome.attempt, outcome.resolution
    return {
        "delivery_id": attempt.delivery_id,
        "attempt_no": attempt.attempt_no,
        "status": resolution.status.value,
        "next_attempt_at_ms": resolution.next_attempt_at_ms,
        "last_error": resolution.last_error,
        "reason": resolution.last_error or "delivered",
        "now_ms": now_ms,
        "lease_token": outcome.lease_token,
    }


def attempt_params(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "delivery_id": attempt.delivery_id,
        "attempt_no": attempt.attempt_no,
        "started_at_ms": attempt.started_at_ms,
        "latency_ms": attempt.latency_ms,
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "response_excerpt": attempt.response_excerpt,
        "response_headers": json.dumps(attempt.response_headers),
        "request_payload": attempt.request_payload,
        "detail": attempt.detail,
    }


def failures_disable_reason(failures: int, last_error: str) -> str:
    return f"{failures} consecutive failed deliveries; last: {last_error}"


def gone_disable_reason(last_error: str) -> str:
    return f"receiver answered 410 Gone: {last_error}"


def regrant_params(change: Regrant, now_ms: int) -> dict[str, Any]:
    return {
        "id": change.delivery_id,
        "status": change.status.value,
        "reason": change.reason,
        "channel": change.channel,
        "now_ms": now_ms,
    }


def redecided_params(replacement: Replacement, new: NewDelivery, now_ms: int) -> dict[str, Any]:
    """A new row of an old event, decided again."""
    return {
        "event_id": replacement.event_row_id,
        "kind": new.kind.value,
        "affiliate_code": new.affiliate_code,
        "destination_key": new.destination_key,
        "channel": new.channel,
        "status": new.status.value,
        "reason": new.reason,
        "message_id": new.message_id,
        "next_attempt_at_ms": now_ms if new.status == DeliveryStatus.PENDING else None,
        "now_ms": now_ms,
        "notification": new.notification,
    }


def superseded_reason(created: Sequence[tuple[int, DeliveryStatus]]) -> str:
    """What an old withheld row says it became, so the history stays honest."""
    return "decided again: replaced by " + ", ".join(
        f"delivery {new_id} ({status.value})" for new_id, status in created
    )


def audit_params(entry: NewAuditEntry, now_ms: int) -> dict[str, Any]:
    """An operator's action as the audit trail stores it."""
    return {
        "at_ms": now_ms,
        "action": entry.action,
        "via": entry.via,
        "remote": entry.remote,
        "producer_id": entry.producer_id,
        "target": entry.target,
        "delivery_ids": json.dumps(list(entry.delivery_ids)),
        "outcome": entry.outcome,
    }
