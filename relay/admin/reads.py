"""What the detail pages and their API routes read: one delivery, one event, each with
its buyer masked, or shown to an operator who asked (and then recorded)."""

from __future__ import annotations

from relay.admin import actions
from relay.admin.schemas import DeliveryDetailOut, EventDetailOut
from relay.admin.views import delivery_out, detail_out, event_out
from relay.engine import Relay
from relay.operations import show
from relay.records import HistoryFilter

# The most rows one event lists: an event has one per affiliate and destination.
MAX_EVENT_ROWS = 500


async def delivery_detail(
    relay: Relay, delivery_id: int, *, revealed_to: actions.Actor | None = None
) -> DeliveryDetailOut | None:
    """The delivery with its event and attempts; with `revealed_to`, the buyer shown to
    that operator, which the audit trail records first."""
    detail = await show(relay.store, delivery_id)
    record = await relay.store.event(detail.delivery.event_row_id) if detail else None
    if detail is None or record is None:
        return None
    if revealed_to is not None:
        await actions.revealed(
            relay,
            revealed_to,
            producer=record.producer_id,
            what=f"delivery {delivery_id}",
            ids=(delivery_id,),
        )
    return detail_out(detail, record, revealed=revealed_to is not None)


async def event_detail(
    relay: Relay, event_row_id: int, *, revealed_to: actions.Actor | None = None
) -> EventDetailOut | None:
    """The event and every decision it produced, the buyer as for `delivery_detail`."""
    record = await relay.store.event(event_row_id)
    if record is None:
        return None
    rows = await relay.store.history(HistoryFilter(event_row_id=event_row_id, limit=MAX_EVENT_ROWS))
    if revealed_to is not None:
        await actions.revealed(
            relay,
            revealed_to,
            producer=record.producer_id,
            what=f"event {event_row_id}",
            ids=tuple(r.id for r in rows),
        )
    return EventDetailOut(
        event=event_out(record, revealed=revealed_to is not None),
        deliveries=[delivery_out(r) for r in rows],
    )
