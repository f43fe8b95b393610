"""The SQLite outbox against a real file: transactions, group commit, leases, health."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store import StoreUnavailable
from relay.store.records import (
    AttemptRecord,
    AttemptResolution,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthEffect,
    HistoryFilter,
    NewDelivery,
    NewEvent,
)
from relay.store.sqlite import SqliteStore, open_sqlite_store

KEY = "acme/K1/0"


def new_event(hotmart_id: str, *statuses: DeliveryStatus, key: str = KEY) -> NewEvent:
    return NewEvent(
        producer_id="acme",
        hotmart_id=hotmart_id,
        event_name="PURCHASE_BILLET_PRINTED",
        source="2.0.0",
        transaction_code=f"HP{hotmart_id}",
        product_id="1",
        payload_json="{}",
        deliveries=tuple(
            NewDelivery(
                status=status,
                reason="because",
                message_id=f"msg_{hotmart_id}_{i}",
                affiliate_code="K1",
                destination_key=key,
                channel="webhook",
            )
            for i, status in enumerate(statuses or (DeliveryStatus.PENDING,))
        ),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "relay.sqlite3", busy_timeout_ms=100) as opened:
        yield opened


async def test_migrations_apply_once(tmp_path: Path) -> None:
    db = tmp_path / "relay.sqlite3"
    for _ in range(2):
        async with open_sqlite_store(db):
            pass
    assert db.stat().st_mode & 0o777 == 0o600  # buyer data: the relay's user only
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_concurrent_ingests_are_group_committed_and_all_land(store: SqliteStore) -> None:
    events = [new_event(str(i)) for i in range(300)]
    results = await asyncio.gather(*(store.ingest(e, now_ms=1) for e in events))
    assert [r.status for r in results] == ["accepted"] * 300
    assert len({r.event_row_id for r in results}) == 300
    assert (await store.count_by_status()) == {"pending": 300}


async def test_duplicates_in_the_same_batch_add_nothing(store: SqliteStore) -> None:
    results = await asyncio.gather(*(store.ingest(new_event("same"), now_ms=1) for _ in range(5)))
    assert sorted(r.status for r in results) == ["accepted"] + ["duplicate"] * 4
    assert {r.event_row_id for r in results} == {results[0].event_row_id}
    assert len(await store.history(HistoryFilter())) == 1


async def test_event_and_its_decisions_commit_together_or_not_at_all(
    store: SqliteStore, tmp_path: Path
) -> None:
    # Fault injection with a real trigger: the second decision row cannot be written.
    await store.run(
        lambda c: c.execute(
            "CREATE TRIGGER fail_boom BEFORE INSERT ON deliveries WHEN NEW.message_id LIKE '%_1' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    )
    with pytest.raises(StoreUnavailable):
        await store.ingest(
            new_event("broken", DeliveryStatus.PENDING, DeliveryStatus.WITHHELD), now_ms=1
        )
    rows = await store.run(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone())
    assert rows == (0,)
    assert await store.history(HistoryFilter()) == []


async def test_a_lease_stops_a_second_claim_until_it_expires(store: SqliteStore) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    first = await claim(store, 100, 1_000, 10)
    assert [d.message_id for d in first] == ["msg_a_0"]
    blocked = await store.claim_due(500, 2_000, 10, per_destination=100)
    assert blocked.deliveries == []
    assert blocked.next_due_at_ms == 1_000  # the lease's end: when it could come back
    again = await claim(store, 1_000, 3_000, 10)
    assert [d.id for d in again] == [first[0].id]


async def test_release_all_leases_hands_rows_back_after_a_crash(store: SqliteStore) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    await claim(store, 100, 10**12, 10)
    assert await store.release_all_leases() == 1
    assert len(await claim(store, 100, 200, 10)) == 1


async def test_claim_fills_free_slots_fairly_across_destinations(store: SqliteStore) -> None:
    for i in range(10):  # a flood for K1, queued first...
        await store.ingest(new_event(f"a{i}", key="acme/K1/0"), now_ms=1)
    await store.ingest(new_event("b", key="acme/K2/0"), now_ms=2)  # ...then one for K2
    first = await claim(store, 5, 100, 10, per_destination=3, in_flight={"acme/K1/0": 1})
    assert [d.destination_key for d in first] == ["acme/K1/0"] * 2 + ["acme/K2/0"]
    # K1 is now full: it is left out entirely, whatever its backlog.
    full = await claim(store, 5, 100, 10, per_destination=3, in_flight={"acme/K1/0": 3})
    assert full == []


async def test_claim_honours_only_ids(store: SqliteStore) -> None:
    await store.ingest(new_event("a"), now_ms=1)
    await store.ingest(new_event("b"), now_ms=1)
    only = await claim(store, 1, 100, 10, only_ids=[2])
    assert [d.id for d in only] == [2]


async def test_future_deliveries_are_not_due_yet(store: SqliteStore) -> None:
    await store.ingest(new_event("a"), now_ms=5_000)
    early = await store.claim_due(4_999, 6_000, 10, per_destination=100)
    assert early.deliveries == []
    assert early.next_due_at_ms == 5_000


async def claim(
    store: SqliteStore,
    now_ms: int,
    lease_until_ms: int,
    limit: int,
    per_destination: int = 100,
    in_flight: dict[str, int] | None = None,
    only_ids: list[int] | None = None,
) -> list[ClaimedDelivery]:
    result = await store.claim_due(
        now_ms, lease_until_ms, limit, per_destination, in_flight or {}, only_ids
    )
    return result.deliveries


def attempt(delivery_id: int, n: int) -> AttemptRecord:
    return AttemptRecord(delivery_id, n, 1, 2.5, "transient", 500, "oops", {}, "{}", "HTTP 500")


async def test_sustained_failures_disable_once_and_queue_one_alert(store: SqliteStore) -> None:
    for i in range(4):
        await store.ingest(new_event(f"e{i}"), now_ms=1)
    claimed = await claim(store, 1, 100, 10)  # all four in flight when the run starts
    alerts = 0
    for i, delivery in enumerate(claimed):
        change = await store.record_attempt(
            attempt(delivery.id, 1),
            AttemptResolution(DeliveryStatus.FAILED, None, "HTTP 500", HealthEffect.FAILED),
            KEY,
            2,
            new_event(f"alert{i}", key=f"alert:{KEY}"),
            now_ms=2,
        )
        alerts += change.disabled_now
    assert alerts == 1
    health = (await store.destination_health())[KEY]
    assert (health.enabled, health.consecutive_failures) == (False, 4)
    assert "2 consecutive failed deliveries" in health.disabled_reason
    pending = await store.history(HistoryFilter(status="pending"))
    assert [r.destination_key for r in pending] == [f"alert:{KEY}"]


async def test_success_resets_the_failure_run(store: SqliteStore) -> None:
    for i, effect in enumerate([HealthEffect.FAILED, HealthEffect.SUCCESS, HealthEffect.FAILED]):
        await store.ingest(new_event(f"e{i}"), now_ms=1)
        (claimed,) = await claim(store, 1, 100, 1)
        status = (
            DeliveryStatus.DELIVERED if effect == HealthEffect.SUCCESS else DeliveryStatus.FAILED
        )
        await store.record_attempt(
            attempt(claimed.id, 1), AttemptResolution(status, None, "", effect), KEY, 3, None, 2
        )
    health = (await store.destination_health())[KEY]
    assert (health.enabled, health.consecutive_failures) == (True, 1)
    assert health.last_success_at_ms == 2


async def test_disabled_destination_rows_are_skipped_then_replayable(store: SqliteStore) -> None:
    await store.set_destination_enabled(KEY, False, "operator", now_ms=1)
    await store.ingest(new_event("a", DeliveryStatus.PENDING, DeliveryStatus.WITHHELD), now_ms=1)
    assert await claim(store, 1, 100, 10) == []
    rows = {r.status: r for r in await store.history(HistoryFilter())}
    assert rows["skipped"].reason == "destination disabled: operator"
    await store.set_destination_enabled(KEY, True, "", now_ms=2)
    assert await store.requeue([rows["skipped"].id, rows["withheld"].id], now_ms=3) == [
        rows["skipped"].id
    ]
    (claimed,) = await claim(store, 3, 100, 10)
    assert claimed.kind == DeliveryKind.NOTIFICATION


async def test_history_filters_and_pages(store: SqliteStore) -> None:
    for i in range(5):
        await store.ingest(new_event(f"e{i}"), now_ms=i)
    page = await store.history(HistoryFilter(limit=2))
    nxt = await store.history(HistoryFilter(limit=2, before_id=page[-1].id))
    assert [r.id for r in page] == [5, 4]
    assert [r.id for r in nxt] == [3, 2]
    assert len(await store.history(HistoryFilter(since_ms=3))) == 2
    assert await store.history(HistoryFilter(channel="email")) == []
    assert await store.delivery(999) is None


async def test_a_locked_database_is_store_unavailable(store: SqliteStore, tmp_path: Path) -> None:
    blocker = sqlite3.connect(tmp_path / "relay.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ingest(new_event("x"), now_ms=1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await store.ingest(new_event("x"), now_ms=1)).status == "accepted"
