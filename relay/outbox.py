"""What the outbox stores for an event: the event as kept, and its rows.

The one place a `NewEvent` is made, for ingest (what Hotmart posted, with a row per
decision) and for send-test (a made-up slip, with a test row per destination), and
the one place a row gets its message id: the id a receiver deduplicates on, the same
on every attempt. A late grant adds rows to an old event with `decided_rows` too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from relay.config import Destination
from relay.decide import Decision, Outcome
from relay.destination_ids import destination_key
from relay.hotmart import SLIP_EVENT, Event
from relay.records import DeliveryKind, DeliveryStatus, NewDelivery, NewEvent, Notice

STATUS_OF_OUTCOME = {
    Outcome.DELIVER: DeliveryStatus.PENDING,
    Outcome.WITHHELD: DeliveryStatus.WITHHELD,
    Outcome.SKIPPED: DeliveryStatus.SKIPPED,
    Outcome.IGNORED: DeliveryStatus.IGNORED,
}
TEST_REASON = "test notification (relay send-test)"


def new_message_id() -> str:
    """The id a receiver deduplicates on: Standard Webhooks' msg_ prefix, 128 random bits.

    Straight from the kernel's CSPRNG, as `secrets.token_hex` draws them, without its two
    wrapping calls: fresh bits per id, so no id tells another (a counter would), and no
    two processes or restarts can meet.
    """
    return f"msg_{os.urandom(16).hex()}"


def notice_of(event_name: str) -> Notice:
    """What a notification of this event says, unless sale recovery says more."""
    return Notice.SLIP if event_name == SLIP_EVENT else Notice.EVENT


def decided_rows(
    decisions: Sequence[Decision], notice: Notice | None = None
) -> tuple[NewDelivery, ...]:
    """One row per decision, each with its own message id: at ingest, and for a late grant.

    `notice`: what the rows say; None leaves it to `new_event`, which knows the event.
    """
    return tuple(
        NewDelivery(
            status=STATUS_OF_OUTCOME[d.outcome],
            reason=d.reason,
            message_id=new_message_id(),
            affiliate_code=d.affiliate_code,
            destination_key=d.destination_key,
            channel=d.channel,
            notification=notice,
        )
        for d in decisions
    )


def send_test_rows(
    producer_id: str, affiliate_code: str, destinations: Sequence[Destination]
) -> tuple[NewDelivery, ...]:
    """One pending test row per destination: `relay send-test`, always sent."""
    return tuple(
        NewDelivery(
            status=DeliveryStatus.PENDING,
            reason=TEST_REASON,
            message_id=new_message_id(),
            affiliate_code=affiliate_code,
            destination_key=destination_key(producer_id, affiliate_code, d.stable_id),
            channel=d.kind,
            kind=DeliveryKind.TEST,
        )
        for d in destinations
    )


def new_event(producer_id: str, event: Event, rows: tuple[NewDelivery, ...]) -> NewEvent:
    """The event as stored, with its rows.

    The buyer is stored only if a row may ever need it: one to send, or one withheld
    (a late grant can still send it). An event whose every row is ignored or skipped
    is stored without its buyer, since no delivery of it can ever be made.
    """
    needs_buyer = any(r.status in (DeliveryStatus.PENDING, DeliveryStatus.WITHHELD) for r in rows)
    stored = event if needs_buyer else event.model_copy(update={"buyer": None})
    notice = notice_of(event.event)
    rows = tuple(r if r.notification else replace(r, notification=notice) for r in rows)
    return NewEvent(
        producer_id=producer_id,
        hotmart_id=event.id,
        event_name=event.event,
        source=event.source,
        transaction_code=event.purchase.transaction,
        product_id=event.product.id,
        payload_json=stored.model_dump_json(),
        deliveries=rows,
    )
