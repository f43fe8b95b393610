"""Claims per destination (issue 10): bounded work at any backlog, fair, never stranded."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.records import AttemptRecord, AttemptResolution, DeliveryStatus, HealthEffect
from relay.store import Store
from relay.store.sqlite import SqliteStore, open_sqlite_store
from relay.store.sqlite_statements import Q
from tests.test_store import new_event

DESTINATIONS = 8
IN_FLIGHT = 16  # two rows of each destination already in the caller's hands


# The claim's plans and step counts are SQLite's; what a claim does (fairness, caps,
# every way a row becomes claimable) runs on both backends through `store`.
@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "relay.sqlite3", busy_timeout_ms=1000) as opened:
        yield opened


def _fill(conn: sqlite3.Connection, rows: int, first_due_ms: int) -> None:
    """`rows` pending webhooks over the destinations, due one per ms: a bulk insert."""
    event_id = conn.execute(
        "INSERT INTO events (producer_id, hotmart_id, event_name, source, outcome,"
        " payload_json, received_at_ms) VALUES ('acme', :h, 'E', '2.0.0', 'accepted', '{}', 1)",
        {"h": f"bulk-{first_due_ms}"},
    ).lastrowid
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < :rows - 1)"
        " INSERT INTO deliveries (event_id, producer_id, event_name, status, message_id,"
        " destination_key, channel, next_attempt_at_ms, created_at_ms, updated_at_ms)"
        " SELECT :event, 'acme', 'E', 'pending', 'm' || :first || '-' || i,"
        " 'acme/K' || (i % :keys) || '/0', 'webhook', :first + i, 1, 1 FROM n",
        {"rows": rows, "first": first_due_ms, "keys": DESTINATIONS, "event": event_id},
    )
    # As every write that inserts pending rows does (queries.sql: queue_destinations).
    conn.execute(
        "INSERT INTO destination_queue (key, next_due_ms)"
        " SELECT destination_key, MIN(next_attempt_at_ms) FROM deliveries"
        " WHERE status = 'pending' GROUP BY destination_key"
        " ON CONFLICT (key) DO UPDATE SET next_due_ms = MIN(next_due_ms, excluded.next_due_ms)"
    )


async def _claim_steps(store: SqliteStore, now_ms: int, exclude: list[int]) -> tuple[int, int]:
    """How many SQLite virtual-machine steps one claim takes, and how many rows it leased."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 1
        return 0

    await store.run(lambda c: c.set_progress_handler(tick, 10))
    try:
        claim = await store.claim_due(now_ms, now_ms + 60_000, 32, 4, exclude_ids=exclude)
    finally:
        await store.run(lambda c: c.set_progress_handler(None, 0))
    return steps * 10, len(claim.deliveries)


async def test_a_claim_reads_the_same_rows_at_1k_and_200k_pending(
    sqlite_store: SqliteStore,
) -> None:
    """The old claim walked the due index across the backlog: 54 ms at 200k. Counted in
    SQLite's own steps, not in time: the same claim on 200 times the backlog."""
    now_ms = 10_000_000
    await sqlite_store.run(lambda c: _fill(c, 1_000, 1))
    in_flight = [
        d.id
        for d in (await sqlite_store.claim_due(now_ms, now_ms + 60_000, IN_FLIGHT, 2)).deliveries
    ]
    assert len(in_flight) == IN_FLIGHT
    small_steps, small_taken = await _claim_steps(sqlite_store, now_ms, in_flight)

    await sqlite_store.run(lambda c: _fill(c, 199_000, 2_000))
    big_steps, big_taken = await _claim_steps(sqlite_store, now_ms + 1, in_flight)

    assert small_taken == big_taken == 16  # 8 destinations x the 2 slots each has left
    assert big_steps < small_steps * 1.5, (small_steps, big_steps)
    assert big_steps < 20_000  # a few hundred rows' worth, not 200,000


async def test_each_claim_step_uses_its_index(sqlite_store: SqliteStore) -> None:
    """No statement of a claim scans a table or sorts the backlog (EXPLAIN QUERY PLAN)."""
    params = {"now_ms": 1, "exclude_ids": "[]", "limit": 3, "key": "k", "only_ids": "[]"}
    names = ["skip_disabled_due", "expired_leases_due", "held_by_destination"]
    names += ["due_destinations", "destination_head", "next_due"]

    def plans(conn: sqlite3.Connection) -> dict[str, str]:
        return {
            name: " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + Q[name], params))
            for name in names
        }

    found = await sqlite_store.run(plans)
    for name, plan in found.items():
        assert "SCAN deliveries" not in plan and "SCAN d " not in plan, (name, plan)
        assert "TEMP B-TREE FOR ORDER BY" not in plan, (name, plan)
    assert "deliveries_pending_by_destination (destination_key=?" in found["destination_head"]
    assert "deliveries_pending_by_destination (destination_key=?" in found["skip_disabled_due"]
    assert "deliveries_leased" in found["expired_leases_due"]


async def test_a_destination_with_a_high_cap_never_starves_the_others(store: Store) -> None:
    """Slots go first to the destinations with the fewest rows in flight."""
    for n in range(40):
        await store.ingest(new_event(f"busy{n}", key="acme/K1/busy"), 1)
    for n in range(3):
        await store.ingest(new_event(f"quiet{n}", key="acme/K1/quiet"), 2)  # later rows
    caps = {"acme/K1/busy": 32}
    first = await store.claim_due(10, 60_000, 10, 4, caps=caps)
    by_key = Counter(d.destination_key for d in first.deliveries)
    assert by_key == {"acme/K1/busy": 7, "acme/K1/quiet": 3}
    # One more slot: busy's rows are older, but quiet would have 4 in flight, busy 8.
    held = [d.id for d in first.deliveries]
    await store.ingest(new_event("quiet-late", key="acme/K1/quiet"), 20)
    second = await store.claim_due(30, 60_000, 1, 4, exclude_ids=held, caps=caps)
    assert [d.message_id for d in second.deliveries] == ["msg_quiet-late_0"]
    # Quiet is full now (4 of 4): the next slots go to busy, oldest first.
    held += [d.id for d in second.deliveries]
    third = await store.claim_due(30, 60_000, 2, 4, exclude_ids=held, caps=caps)
    assert [d.message_id for d in third.deliveries] == ["msg_busy7_0", "msg_busy8_0"]


async def test_a_retry_a_release_and_an_expired_lease_make_rows_claimable_again(
    store: Store,
) -> None:
    """The queue's bound follows every way a row becomes claimable (the triggers), and a
    lease that simply runs out (the expiry query)."""
    await store.ingest(new_event("a"), 1)
    (row,) = (await store.claim_due(10, 100, 10, 4, owner="cli:1")).deliveries
    assert (await store.claim_due(50, 100, 10, 4)).deliveries == []  # in flight elsewhere
    assert (await store.claim_due(50, 100, 10, 4)).next_due_at_ms == 100  # its lease ends
    (again,) = (await store.claim_due(100, 200, 10, 4)).deliveries  # it ran out: taken over
    assert again.id == row.id
    await store.release_leases("serve")
    (released,) = (await store.claim_due(150, 300, 10, 4)).deliveries
    assert released.id == row.id
    moved = await store.resolve_without_attempt(
        row.id, DeliveryStatus.DELIVERED, "sent", 160, lease_token=released.lease_token
    )
    assert moved
    claim = await store.claim_due(170, 300, 10, 4)
    assert claim.deliveries == [] and claim.next_due_at_ms is None  # the queue row is gone


async def test_a_store_upgraded_with_a_backlog_claims_it(tmp_path: Path) -> None:
    """Migration 8 fills the queue from the rows already pending, leased or not."""
    path = tmp_path / "old.sqlite3"
    async with open_sqlite_store(path) as opened:
        await opened.ingest(new_event("a", DeliveryStatus.PENDING, DeliveryStatus.PENDING), 1)
        await opened.ingest(new_event("b", key="acme/K2/0"), 5)
        await opened.claim_due(10, 20, 1, 4)  # one row leased until 20, then it runs out
    conn = sqlite3.connect(path)
    conn.executescript(
        "DELETE FROM schema_version WHERE version = 8;"
        " DROP TRIGGER destination_queue_on_update;"
        " DROP TABLE destination_queue; DROP INDEX deliveries_pending_by_destination;"
    )
    conn.close()
    async with open_sqlite_store(path) as reopened:
        claim = await reopened.claim_due(30, 1_000, 10, 4)
    assert sorted(d.message_id for d in claim.deliveries) == ["msg_a_0", "msg_a_1", "msg_b_0"]


async def test_a_retry_still_in_the_callers_hands_keeps_its_destination_due(
    store: Store,
) -> None:
    """Between a retry's outcome write and the moment the dispatcher forgets the attempt,
    the row is unleased but excluded. A claim in that gap must not drop its destination
    from the queue: the row would wait for another row of that destination, forever."""
    await store.ingest(new_event("a"), 1)
    (row,) = (await store.claim_due(10, 10_000, 10, 4)).deliveries
    retry_now = AttemptResolution(DeliveryStatus.PENDING, 20, "503", HealthEffect.RETRYING)
    attempt = AttemptRecord(row.id, 1, 10, 1.0, "transient", 503, "", {}, "", "")
    change = await store.record_attempt(
        attempt, retry_now, row.destination_key, 5, None, 20, lease_token=row.lease_token
    )
    assert change.recorded
    in_the_gap = await store.claim_due(20, 10_000, 10, 4, exclude_ids=[row.id])
    assert in_the_gap.deliveries == [] and in_the_gap.next_due_at_ms == 20
    (again,) = (await store.claim_due(21, 10_000, 10, 4)).deliveries
    assert again.id == row.id
