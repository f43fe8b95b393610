"""The rest of the Store contract, on each backend (tests/store_backends.py): withheld rows
decided again, replays, the retention reads and writes, the gauges, the small reads."""

from __future__ import annotations

from dataclasses import replace

from relay.records import (
    AttemptResolution,
    DeliveryStatus,
    HealthEffect,
    HistoryFilter,
    NewAlert,
    NewDelivery,
    NewEvent,
    Notice,
    Regrant,
    Replacement,
    ScrubbedEvent,
)
from relay.store import Store
from tests.test_leases import attempt
from tests.test_store import KEY, new_event


async def test_withheld_rows_are_decided_again_once(store: Store) -> None:
    for name in ("a", "b"):
        await store.ingest(new_event(name, DeliveryStatus.WITHHELD), now_ms=1)
    rows = await store.withheld()
    assert [row.id for row in rows] == [2, 1]  # newest first
    assert rows[0].event_keys == frozenset({KEY})
    assert [row.id for row in await store.withheld(ids=[1], since_ms=0, affiliate_code="K1")] == [1]
    assert await store.withheld(before_id=1) == []
    new_row = NewDelivery(
        DeliveryStatus.PENDING, "granted", "msg_new", "K1", "acme/K1/new", "email"
    )
    result = await store.regrant(
        [Regrant(2, DeliveryStatus.PENDING, "granted", "email")],
        [Replacement((1,), 1, (new_row,))],
        now_ms=5,
    )
    assert result.pending == [2, 3] and result.replaced == [(1, [3])]
    history = {row.id: row for row in await store.history(HistoryFilter())}
    assert (history[1].status, history[2].status, history[3].status) == (
        "superseded",
        "pending",
        "pending",
    )
    assert "delivery 3 (pending)" in history[1].reason
    again = await store.regrant([Regrant(2, DeliveryStatus.WITHHELD, "no")], [], now_ms=6)
    assert again.pending == [] and again.withheld == []  # no longer withheld: left alone


async def test_replays_and_the_reads_a_cli_makes(store: Store) -> None:
    first = await store.ingest(new_event("a"), now_ms=1)
    (claimed,) = (await store.claim_due(1, 100, 10, 100)).deliveries
    failed = AttemptResolution(DeliveryStatus.FAILED, None, "HTTP 500", HealthEffect.FAILED)
    await store.record_attempt(
        attempt(claimed.id, 1), failed, KEY, 5, None, 2, lease_token=claimed.lease_token
    )
    assert await store.failed_since(None) == [claimed.id]
    assert await store.failed_since(10) == []
    assert await store.delivery_ids_of_event(first.event_row_id) == [claimed.id]
    assert await store.settled_since_replay([claimed.id]) == [claimed.id]
    assert await store.requeue([claimed.id], now_ms=3) == [claimed.id]
    assert await store.settled_since_replay([claimed.id]) == []
    gauges = await store.queue_gauges()
    assert (gauges.pending, gauges.earliest_due_at_ms, gauges.destinations_disabled) == (1, 3, 0)
    await store.set_destination_enabled(KEY, False, "operator", now_ms=4)
    assert (await store.queue_gauges()).destinations_disabled == 1
    event = await store.event(first.event_row_id)
    assert event is not None and event.hotmart_id == "a" and event.scrubbed_at_ms is None
    assert await store.event(999) is None
    await store.probe_write(5)
    assert store.write_health().last_failure is None


async def test_retention_scrubs_settled_events_and_their_attempts(store: Store) -> None:
    await store.ingest(new_event("old"), now_ms=1)
    await store.ingest(new_event("kept"), now_ms=2)  # still pending: keeps its data
    (claimed, _) = (await store.claim_due(2, 100, 10, 100)).deliveries
    delivered = AttemptResolution(DeliveryStatus.DELIVERED, None, "", HealthEffect.SUCCESS)
    await store.record_attempt(
        attempt(claimed.id, 1), delivered, KEY, 5, None, 3, lease_token=claimed.lease_token
    )
    candidates = await store.scrub_candidates(10, (-1, -1), 10)
    assert [c.hotmart_id for c in candidates] == ["old"]
    counts = await store.scrub([ScrubbedEvent(candidates[0].event_row_id, "{}")], now_ms=20)
    assert (counts.events, counts.attempts) == (1, 1)
    assert await store.scrub_candidates(10, (-1, -1), 10) == []
    assert await store.erase_overwritten(1_000) is True
    detail = await store.delivery(claimed.id)
    assert detail is not None and detail.attempts[0].request_payload == ""


async def test_the_settling_event_of_a_sale(store: Store) -> None:
    await store.ingest(new_event("slip"), now_ms=1)
    assert await store.settling_event("acme", "HPslip") is None
    paid = replace(new_event("paid"), event_name="PURCHASE_APPROVED", transaction_code="HPslip")
    await store.ingest(paid, now_ms=2)
    assert await store.settling_event("acme", "HPslip") == "PURCHASE_APPROVED"
    facts = await store.follow_up_facts("acme", "HPslip")
    assert facts.paid


def reminder(name: str, due_at_ms: int) -> NewEvent:
    return replace(
        new_event(name),
        transaction_code="HPsale",
        deliveries=(
            NewDelivery(
                DeliveryStatus.PENDING,
                "remind",
                f"msg_{name}",
                "K1",
                KEY,
                "email",
                notification=Notice.REMINDER,
                due_at_ms=due_at_ms,
            ),
        ),
    )


async def test_a_settled_sale_cancels_its_reminders_whichever_arrives_first(
    store: Store,
) -> None:
    before = await store.ingest(reminder("early", due_at_ms=1_000), now_ms=1)
    assert before.deliveries == 0  # scheduled, not sent now
    paid = replace(new_event("paid"), event_name="PURCHASE_APPROVED", transaction_code="HPsale")
    await store.ingest(replace(paid, deliveries=()), now_ms=2)
    await store.ingest(reminder("late", due_at_ms=1_000), now_ms=3)
    rows = {row.message_id: row for row in await store.history(HistoryFilter())}
    assert rows["msg_early"].status == rows["msg_late"].status == "cancelled"
    assert rows["msg_late"].reason == "paid before the reminder was due (PURCHASE_APPROVED)"


async def test_a_410_disables_at_once_and_stores_its_alert(store: Store) -> None:
    await store.ingest(new_event("gone"), now_ms=1)
    (claimed,) = (await store.claim_due(1, 100, 10, 100)).deliveries
    gone = AttemptResolution(DeliveryStatus.FAILED, None, "HTTP 410", HealthEffect.GONE)
    alert = NewAlert("acme", "alert-gone", "DESTINATION_DISABLED", KEY, "m-alert", "off", "{}")
    change = await store.record_attempt(
        attempt(claimed.id, 1), gone, KEY, 20, alert, 2, lease_token=claimed.lease_token
    )
    assert change.disabled_now and change.recorded
    health = (await store.destination_health())[KEY]
    assert not health.enabled and "410 Gone" in health.disabled_reason
    assert health.last_error == "HTTP 410"
    (pending,) = await store.history(HistoryFilter(status="pending"))
    assert pending.kind == "alert"
