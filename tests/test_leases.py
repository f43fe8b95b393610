"""Leases are fences (issue 6, defect 4): on each backend (tests/store_backends.py).

A claim hands out a lease with a token. Only the holder of the live token may record
the outcome; a row in flight is never claimed again nor replayed; a serve start
releases only what an earlier serve held.
"""

from __future__ import annotations

import asyncio

from relay.records import (
    AttemptRecord,
    AttemptResolution,
    DeliveryStatus,
    HealthEffect,
    HistoryFilter,
)
from relay.store import Store
from tests.test_store import KEY, new_event

SERVE = "serve"


def attempt(delivery_id: int, n: int) -> AttemptRecord:
    return AttemptRecord(delivery_id, n, 1, 2.5, "success", 200, "ok", {}, "{}", "200 OK")


DELIVERED = AttemptResolution(DeliveryStatus.DELIVERED, None, "", HealthEffect.SUCCESS)


async def test_only_the_live_lease_may_record_an_outcome(store: Store) -> None:
    """A holder whose lease ran out and was taken over cannot write: no second attempt 1."""
    await store.ingest(new_event("a"), now_ms=100)
    (old,) = (await store.claim_due(100, 1_000, 10, 100, owner=SERVE)).deliveries
    (new,) = (await store.claim_due(1_000, 2_000, 10, 100, owner="cli:42")).deliveries
    assert old.id == new.id and old.lease_token != new.lease_token

    late = await store.record_attempt(
        attempt(old.id, 1), DELIVERED, KEY, 5, None, 1_500, lease_token=old.lease_token
    )
    assert not late.recorded
    current = await store.record_attempt(
        attempt(new.id, 1), DELIVERED, KEY, 5, None, 1_600, lease_token=new.lease_token
    )
    assert current.recorded
    detail = await store.delivery(new.id)
    assert detail is not None
    assert [a.attempt_no for a in detail.attempts] == [1]  # never two rows numbered 1
    assert (detail.delivery.status, detail.delivery.attempts) == ("delivered", 1)
    # Health moved once, for the write that counted.
    assert (await store.destination_health())[KEY].last_success_at_ms == 1_600


async def test_a_stale_holder_cannot_finish_a_row_unsent_either(store: Store) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    (old,) = (await store.claim_due(100, 1_000, 10, 100)).deliveries
    (new,) = (await store.claim_due(1_000, 2_000, 10, 100)).deliveries
    refused = await store.resolve_without_attempt(
        old.id, DeliveryStatus.WITHHELD, "no", 1_100, lease_token=old.lease_token
    )
    assert refused is False
    assert (await store.history(HistoryFilter()))[0].status == "pending"
    done = await store.resolve_without_attempt(
        new.id, DeliveryStatus.WITHHELD, "no", 1_200, lease_token=new.lease_token
    )
    assert done is True
    assert (await store.history(HistoryFilter()))[0].status == "withheld"


async def test_a_row_in_flight_is_never_claimed_again_even_past_its_lease(
    store: Store,
) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    await store.ingest(new_event("b"), now_ms=100)
    (first,) = (await store.claim_due(100, 1_000, 1, 100)).deliveries
    later = await store.claim_due(5_000, 6_000, 10, 100, exclude_ids=[first.id])
    assert [d.id for d in later.deliveries] == [first.id + 1]


async def test_in_flight_rows_count_against_their_destination(store: Store) -> None:
    for i in range(5):
        await store.ingest(new_event(f"a{i}"), now_ms=1)
    held = [d.id for d in (await store.claim_due(1, 100, 2, 100)).deliveries]
    more = await store.claim_due(200, 300, 10, 3, exclude_ids=held)
    assert len(more.deliveries) == 1  # 2 in flight + 1 = the destination's 3 slots
    full = await store.claim_due(400, 500, 10, 3, exclude_ids=[*held, more.deliveries[0].id])
    assert full.deliveries == []


async def test_replay_refuses_a_row_in_flight(store: Store) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    (claimed,) = (await store.claim_due(100, 10_000, 10, 100)).deliveries
    assert await store.requeue([claimed.id], now_ms=200) == []
    assert await store.leased([claimed.id], now_ms=200) == [claimed.id]
    # Its holder still owns it and records its outcome.
    change = await store.record_attempt(
        attempt(claimed.id, 1), DELIVERED, KEY, 5, None, 300, lease_token=claimed.lease_token
    )
    assert change.recorded
    assert await store.leased([claimed.id], now_ms=400) == []
    assert await store.requeue([claimed.id], now_ms=400) == [claimed.id]


async def test_a_serve_start_releases_only_what_an_earlier_serve_held(
    store: Store,
) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    await store.ingest(new_event("b"), now_ms=100)
    (by_serve,) = (await store.claim_due(100, 10**12, 1, 100, owner=SERVE)).deliveries
    (by_cli,) = (await store.claim_due(100, 10**12, 1, 100, owner="cli:4242")).deliveries
    assert await store.release_leases(SERVE) == 1
    again = await store.claim_due(200, 300, 10, 100)
    assert [d.id for d in again.deliveries] == [by_serve.id]  # the CLI's row stays its own
    assert by_cli.id not in [d.id for d in again.deliveries]


async def test_a_batch_of_successes_keeps_every_fence(store: Store) -> None:
    """Outcomes that share a commit take one `executemany` path when all are successes;
    one stale holder among them sends the batch the slow way, and only it is refused."""
    for name in "abcd":
        await store.ingest(new_event(name), now_ms=100)
    held = (await store.claim_due(100, 1_000, 10, 100, owner=SERVE)).deliveries
    stale = held[0]
    (taken_over,) = (
        await store.claim_due(1_000, 2_000, 10, 100, owner="cli:7", only_ids=[stale.id])
    ).deliveries

    async def record(delivery_id: int, token: str) -> bool:
        change = await store.record_attempt(
            attempt(delivery_id, 1), DELIVERED, KEY, 5, None, 1_500, lease_token=token
        )
        return change.recorded

    # All four in one group commit: the stale one refused, the three others written.
    results = await asyncio.gather(*(record(d.id, d.lease_token) for d in held))
    assert results == [False, True, True, True]
    # Then a batch of only good ones takes the fast path and writes every row.
    for name in "efg":
        await store.ingest(new_event(name), now_ms=1_600)
    fresh = (await store.claim_due(1_600, 9_000, 10, 100, exclude_ids=[stale.id])).deliveries
    assert len(fresh) == 3
    assert all(await asyncio.gather(*(record(d.id, d.lease_token) for d in fresh)))
    assert await record(taken_over.id, taken_over.lease_token)
    statuses = {row.message_id: row.status for row in await store.history(HistoryFilter())}
    assert set(statuses.values()) == {"delivered"} and len(statuses) == 7
    for delivery in [*held, *fresh]:
        detail = await store.delivery(delivery.id)
        assert detail is not None and [a.attempt_no for a in detail.attempts] == [1]
    assert (await store.destination_health())[KEY].last_success_at_ms == 1_500
