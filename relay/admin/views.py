"""Records of the store as the admin page and its API show them (`relay.admin.schemas`).

One place turns a row into what an operator reads: its reason in words, times in ISO
8601 UTC, the buyer masked until revealed, a webhook URL without its query or
credentials (a receiver may put a token there).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from relay.admin.masking import hidden_values, mask_text, masked_buyer, masked_event_payload
from relay.admin.schemas import (
    AttemptOut,
    AuditOut,
    BuyerOut,
    DeliveryDetailOut,
    DeliveryOut,
    DestinationOut,
    EventOut,
)
from relay.destination_ids import split_destination_key
from relay.formatting import iso_utc
from relay.hotmart import Event
from relay.operations import DestinationState
from relay.records import AttemptRow, AuditEntry, DeliveryDetail, DeliveryRow, EventRecord


def iso(ms: int | None) -> str | None:
    return iso_utc(ms)


def iso_required(ms: int) -> str:
    return iso_utc(ms) or str(ms)


def reason_of(row: DeliveryRow) -> str:
    """Why the row stands where it does: a retry's time and error, a failure's error."""
    if row.status == "pending":
        due = iso(row.next_attempt_at_ms)
        return f"retry at {due}: {row.last_error}" if row.last_error else f"queued, due {due}"
    if row.status == "failed" and row.last_error:
        return row.last_error
    return row.reason


def delivery_out(row: DeliveryRow) -> DeliveryOut:
    return DeliveryOut(
        id=row.id,
        kind=row.kind,
        status=row.status,
        reason=reason_of(row),
        last_status_code=row.last_status_code,
        producer=row.producer_id,
        affiliate=row.affiliate_code,
        destination=row.destination_key,
        channel=row.channel,
        event=row.event_name,
        event_row_id=row.event_row_id,
        hotmart_id=row.hotmart_id,
        transaction=row.transaction_code,
        message_id=row.message_id,
        attempts=row.attempts,
        next_attempt_at=iso(row.next_attempt_at_ms) if row.status == "pending" else None,
        created_at=iso_required(row.created_at_ms),
        updated_at=iso_required(row.updated_at_ms),
    )


def parsed_event(payload_json: str) -> Event | None:
    """The stored payload as an `Event`; None for the relay's own (a producer alert)."""
    try:
        return Event.model_validate_json(payload_json)
    except ValidationError:
        return None


def event_out(record: EventRecord, *, revealed: bool) -> EventOut:
    event = parsed_event(record.payload_json)
    buyer = masked_buyer(event.buyer, revealed) if event else None
    if event is not None:
        payload = masked_event_payload(event, revealed)
    else:
        # An alert's payload names a destination and a time: no buyer in it.
        try:
            loaded = json.loads(record.payload_json)
        except ValueError:
            loaded = "(not JSON)"
        payload = loaded if isinstance(loaded, dict) else {"payload": loaded}
    return EventOut(
        id=record.id,
        producer=record.producer_id,
        hotmart_id=record.hotmart_id,
        event=record.event_name,
        source=record.source,
        outcome=record.outcome,
        transaction=record.transaction_code,
        product_id=record.product_id,
        received_at=iso_required(record.received_at_ms),
        scrubbed_at=iso(record.scrubbed_at_ms),
        test=bool(event and event.is_test),
        buyer=BuyerOut(**buyer) if buyer else None,
        buyer_revealed=revealed,
        payload=payload,
    )


def attempt_out(attempt: AttemptRow, hidden: list[str]) -> AttemptOut:
    return AttemptOut(
        attempt_no=attempt.attempt_no,
        started_at=iso_required(attempt.started_at_ms),
        latency_ms=round(attempt.latency_ms, 1),
        outcome=attempt.outcome,
        status_code=attempt.status_code,
        detail=mask_text(attempt.detail, hidden),
        request_payload=mask_text(attempt.request_payload, hidden),
        response_excerpt=mask_text(attempt.response_excerpt, hidden),
        response_headers={
            mask_text(k, hidden): mask_text(v, hidden) for k, v in attempt.response_headers.items()
        },
    )


def detail_out(detail: DeliveryDetail, record: EventRecord, *, revealed: bool) -> DeliveryDetailOut:
    event = parsed_event(detail.event_payload_json)
    hidden = [] if revealed or event is None else hidden_values(event.buyer, _country(event))
    return DeliveryDetailOut(
        delivery=delivery_out(detail.delivery),
        event=event_out(record, revealed=revealed),
        attempts=[attempt_out(a, hidden) for a in detail.attempts],
    )


def _country(event: Event) -> str:
    return event.purchase.buyer_country


def shown_target(target: str) -> str:
    """`webhook https://host/path` without the URL's credentials or query."""
    kind, _, address = target.partition(" ")
    if kind != "webhook":
        return target
    parts = urlsplit(address)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return f"{kind} {urlunsplit((parts.scheme, host, parts.path, '', ''))}{query}"


def destination_out(state: DestinationState) -> DestinationOut:
    producer, affiliate, destination_id = split_destination_key(state.key) or ("", "", "")
    health = state.health
    return DestinationOut(
        key=state.key,
        producer=producer,
        affiliate=affiliate,
        id=destination_id,
        kind=state.target.partition(" ")[0],
        target=shown_target(state.target),
        enabled=state.enabled,
        disabled_reason=state.disabled_reason,
        consecutive_failures=health.consecutive_failures if health else 0,
        last_success_at=iso(health.last_success_at_ms) if health else None,
        last_error=health.last_error if health else "",
        last_error_at=iso(health.last_error_at_ms) if health else None,
    )


def audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        id=entry.id,
        at=iso_required(entry.at_ms),
        action=entry.action,
        via=entry.via,
        remote=entry.remote,
        producer=entry.producer_id,
        target=entry.target,
        delivery_ids=list(entry.delivery_ids),
        outcome=entry.outcome,
    )
