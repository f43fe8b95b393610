"""The outbox on each backend (a real SQLite file, a real PostgreSQL schema): transactions,
group commit, leases, health. A few tests read what only SQLite has (its plans, its lock)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from relay.alerts import DestinationDisabled
from relay.records import (
    AttemptRecord,
    AttemptResolution,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthEffect,
    HistoryFilter,
    NewAlert,
    NewDelivery,
    NewEvent,
)
from relay.store import Store, StoreRejected, StoreUnavailable
from relay.store.group_commit import GroupCommit, ItemFailed
from relay.store.queries import load_migrations
from relay.store.sqlite import SqliteStore, open_sqlite_store
from relay.store.sqlite_statements import SQL_DIR, Q
from tests.store_backends import add_failing_trigger, execute_sql, scalar

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
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "relay.sqlite3", busy_timeout_ms=100) as opened:
        yield opened


async def test_migrations_apply_once(tmp_path: Path) -> None:
    db = tmp_path / "relay.sqlite3"
    for _ in range(2):
        async with open_sqlite_store(db):
            pass
    assert db.stat().st_mode & 0o777 == 0o600  # buyer data: the relay's user only
    conn = sqlite3.connect(db)
    # Each migration file once, in order, with no gap.
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [
        (version,) for version, _ in load_migrations(SQL_DIR)
    ]
    assert [version for version, _ in load_migrations(SQL_DIR)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_concurrent_ingests_are_group_committed_and_all_land(store: Store) -> None:
    events = [new_event(str(i)) for i in range(300)]
    results = await asyncio.gather(*(store.ingest(e, now_ms=1) for e in events))
    assert [r.status for r in results] == ["accepted"] * 300
    assert len({r.event_row_id for r in results}) == 300
    assert (await store.count_by_status()) == {"pending": 300}


async def test_duplicates_in_the_same_batch_add_nothing(store: Store) -> None:
    results = await asyncio.gather(*(store.ingest(new_event("same"), now_ms=1) for _ in range(5)))
    assert sorted(r.status for r in results) == ["accepted"] + ["duplicate"] * 4
    assert {r.event_row_id for r in results} == {results[0].event_row_id}
    assert len(await store.history(HistoryFilter())) == 1


async def test_event_and_its_decisions_commit_together_or_not_at_all(
    store: Store, tmp_path: Path
) -> None:
    # Fault injection with a real trigger: the second decision row cannot be written.
    await add_failing_trigger(store, "deliveries", "NEW.message_id LIKE '%_1'")
    with pytest.raises(StoreUnavailable):
        await store.ingest(
            new_event("broken", DeliveryStatus.PENDING, DeliveryStatus.WITHHELD), now_ms=1
        )
    assert await scalar(store, "SELECT COUNT(*) FROM events") == 0
    assert await store.history(HistoryFilter()) == []


async def test_a_lease_stops_a_second_claim_until_it_expires(store: Store) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    first = await claim(store, 100, 1_000, 10)
    assert [d.message_id for d in first] == ["msg_a_0"]
    blocked = await store.claim_due(500, 2_000, 10, per_destination=100)
    assert blocked.deliveries == []
    assert blocked.next_due_at_ms == 1_000  # the lease's end: when it could come back
    again = await claim(store, 1_000, 3_000, 10)
    assert [d.id for d in again] == [first[0].id]


async def test_release_all_leases_hands_rows_back_after_a_crash(store: Store) -> None:
    await store.ingest(new_event("a"), now_ms=100)
    await claim(store, 100, 10**12, 10)
    assert await store.release_leases("serve") == 1
    assert len(await claim(store, 100, 200, 10)) == 1


async def test_claim_fills_free_slots_fairly_across_destinations(store: Store) -> None:
    for i in range(10):  # a flood for K1, queued first...
        await store.ingest(new_event(f"a{i}", key="acme/K1/0"), now_ms=1)
    await store.ingest(new_event("b", key="acme/K2/0"), now_ms=2)  # ...then one for K2
    in_flight = [d.id for d in await claim(store, 5, 100, 1)]  # one K1 row already in flight
    first = await claim(store, 5, 100, 10, per_destination=3, exclude_ids=in_flight)
    assert [d.destination_key for d in first] == ["acme/K1/0"] * 2 + ["acme/K2/0"]
    # K1 is now full: it is left out entirely, whatever its backlog.
    in_flight += [d.id for d in first if d.destination_key == "acme/K1/0"]
    full = await claim(store, 5, 100, 10, per_destination=3, exclude_ids=in_flight)
    assert full == []


async def test_claim_honours_only_ids(store: Store) -> None:
    await store.ingest(new_event("a"), now_ms=1)
    await store.ingest(new_event("b"), now_ms=1)
    only = await claim(store, 1, 100, 10, only_ids=[2])
    assert [d.id for d in only] == [2]


async def test_future_deliveries_are_not_due_yet(store: Store) -> None:
    await store.ingest(new_event("a"), now_ms=5_000)
    early = await store.claim_due(4_999, 6_000, 10, per_destination=100)
    assert early.deliveries == []
    assert early.next_due_at_ms == 5_000


async def claim(
    store: Store,
    now_ms: int,
    lease_until_ms: int,
    limit: int,
    per_destination: int = 100,
    exclude_ids: list[int] | None = None,
    only_ids: list[int] | None = None,
) -> list[ClaimedDelivery]:
    result = await store.claim_due(
        now_ms,
        lease_until_ms,
        limit,
        per_destination,
        exclude_ids=exclude_ids or [],
        only_ids=only_ids,
    )
    return result.deliveries


def attempt(delivery_id: int, n: int) -> AttemptRecord:
    return AttemptRecord(delivery_id, n, 1, 2.5, "transient", 500, "oops", {}, "{}", "HTTP 500")


async def test_sustained_failures_disable_once_and_queue_one_alert(store: Store) -> None:
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
            NewAlert(
                producer_id="acme",
                alert_id=f"alert{i}",
                event_name="DESTINATION_DISABLED",
                destination_key=KEY,
                message_id=f"msg_alert{i}",
                reason=f"destination {KEY} was disabled",
                payload_json="{}",
            ),
            now_ms=2,
            lease_token=delivery.lease_token,
        )
        alerts += change.disabled_now
    assert alerts == 1
    health = (await store.destination_health())[KEY]
    assert (health.enabled, health.consecutive_failures) == (False, 4)
    assert "2 consecutive failed deliveries" in health.disabled_reason
    pending = await store.history(HistoryFilter(status="pending"))
    assert [(r.kind, r.destination_key) for r in pending] == [("alert", KEY)]


async def test_success_resets_the_failure_run(store: Store) -> None:
    for i, effect in enumerate([HealthEffect.FAILED, HealthEffect.SUCCESS, HealthEffect.FAILED]):
        await store.ingest(new_event(f"e{i}"), now_ms=1)
        (claimed,) = await claim(store, 1, 100, 1)
        status = (
            DeliveryStatus.DELIVERED if effect == HealthEffect.SUCCESS else DeliveryStatus.FAILED
        )
        await store.record_attempt(
            attempt(claimed.id, 1),
            AttemptResolution(status, None, "", effect),
            KEY,
            3,
            None,
            2,
            lease_token=claimed.lease_token,
        )
    health = (await store.destination_health())[KEY]
    assert (health.enabled, health.consecutive_failures) == (True, 1)
    assert health.last_success_at_ms == 2


async def test_disabled_destination_rows_are_skipped_then_replayable(store: Store) -> None:
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


async def test_history_filters_and_pages(store: Store) -> None:
    for i in range(5):
        await store.ingest(new_event(f"e{i}"), now_ms=i)
    page = await store.history(HistoryFilter(limit=2))
    nxt = await store.history(HistoryFilter(limit=2, before_id=page[-1].id))
    assert [r.id for r in page] == [5, 4]
    assert [r.id for r in nxt] == [3, 2]
    assert len(await store.history(HistoryFilter(since_ms=3))) == 2
    assert await store.history(HistoryFilter(channel="email")) == []
    assert await store.delivery(999) is None


async def test_a_locked_database_is_store_unavailable(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    store = sqlite_store
    blocker = sqlite3.connect(tmp_path / "relay.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ingest(new_event("x"), now_ms=1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await store.ingest(new_event("x"), now_ms=1)).status == "accepted"


async def test_one_bad_event_fails_alone_and_its_batch_commits(store: Store) -> None:
    """Defect 2: one event that cannot be written failed every event of its group commit."""
    await add_failing_trigger(store, "deliveries", "NEW.message_id = 'msg_bad_0'")
    results = await asyncio.gather(
        *(store.ingest(new_event(name), now_ms=1) for name in ("good1", "bad", "good2")),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreUnavailable)  # ingest answers 503 for it alone
    assert [getattr(r, "status", None) for r in (results[0], results[2])] == ["accepted"] * 2
    stored = await store.history(HistoryFilter())
    assert sorted(r.message_id for r in stored) == ["msg_good1_0", "msg_good2_0"]


async def test_one_outcome_that_cannot_be_written_fails_alone(store: Store) -> None:
    """Its delivery is marked failed with a reason, so it is not claimed forever."""
    for name in ("a", "b", "c"):
        await store.ingest(new_event(name), now_ms=1)
    claimed = (await store.claim_due(1, 10**9, 10, 100)).deliveries
    bad = claimed[1]
    await add_failing_trigger(store, "attempts", f"NEW.delivery_id = {bad.id}")
    delivered = AttemptResolution(DeliveryStatus.DELIVERED, None, "", HealthEffect.SUCCESS)
    results = await asyncio.gather(
        *(
            store.record_attempt(
                attempt(d.id, 1), delivered, KEY, 5, None, 2, lease_token=d.lease_token
            )
            for d in claimed
        ),
        return_exceptions=True,
    )
    assert isinstance(results[1], StoreRejected)
    assert [getattr(r, "recorded", None) for r in (results[0], results[2])] == [True, True]
    by_id = {r.id: r for r in await store.history(HistoryFilter())}
    assert by_id[claimed[0].id].status == by_id[claimed[2].id].status == "delivered"
    assert by_id[bad.id].status == "failed"
    assert "could not be recorded" in by_id[bad.id].reason
    assert (await store.claim_due(10**10, 10**11, 10, 100)).deliveries == []


async def test_a_pending_row_that_cannot_be_read_is_failed_inside_the_claim(
    store: Store,
) -> None:
    """Defect 3: an unknown channel raised inside the claim and killed the dispatcher."""
    for name in ("channel", "kind", "json", "fine"):
        await store.ingest(new_event(name), now_ms=1)
    await execute_sql(
        store,
        "UPDATE deliveries SET channel = 'carrier-pigeon' WHERE message_id = 'msg_channel_0';"
        "UPDATE deliveries SET kind = 'telepathy' WHERE message_id = 'msg_kind_0';"
        "UPDATE events SET payload_json = '{not json' WHERE hotmart_id = 'json';",
    )
    claim = await store.claim_due(1, 100, 10, 100)
    assert [d.message_id for d in claim.deliveries] == ["msg_fine_0"]
    assert len(claim.unreadable) == 3
    failed = {r.message_id: r for r in await store.history(HistoryFilter(status="failed"))}
    assert set(failed) == {"msg_channel_0", "msg_kind_0", "msg_json_0"}
    assert "carrier-pigeon" in failed["msg_channel_0"].reason
    assert "telepathy" in failed["msg_kind_0"].reason
    assert "payload" in failed["msg_json_0"].reason


async def test_next_due_does_not_scan_the_backlog(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    """Defect 10: MIN(CASE ...) read every pending row on every claim (54 ms at 200k)."""
    backlog = 3_000

    def fill(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO events (producer_id, hotmart_id, event_name, source, outcome,"
            " payload_json, received_at_ms) VALUES ('acme', 'bulk', 'E', '2.0.0', 'accepted',"
            " '{}', 1)"
        )
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows)"
            " INSERT INTO deliveries (event_id, producer_id, event_name, status, message_id,"
            " destination_key, channel, next_attempt_at_ms, created_at_ms, updated_at_ms)"
            " SELECT 1, 'acme', 'E', 'pending', 'm' || i, 'acme/K1/0', 'webhook', 10 + i, 1, 1"
            " FROM n",
            {"rows": backlog},
        )
        conn.execute(Q["queue_destinations"], {"key": "acme/K1/0", "due_ms": 11})  # as ingest
        # Three in flight: rows 1-3 (due at 11-13) leased until 13-15.
        conn.execute("UPDATE deliveries SET lease_until_ms = next_attempt_at_ms + 2 WHERE id <= 3")

    await store.run(fill)
    plan = await store.run(
        lambda c: [row[3] for row in c.execute("EXPLAIN QUERY PLAN " + Q["next_due"])]
    )
    reads = [step for step in plan if "USING" in step]
    assert len(reads) == 2, plan
    assert "INDEX destination_queue_by_due" in reads[0] and "TEMP B-TREE" not in " ".join(plan)
    assert "INDEX deliveries_leased" in reads[1]

    def count_steps(conn: sqlite3.Connection) -> tuple[int, int]:
        steps = 0

        def tick() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn.set_progress_handler(tick, 100)  # called every 100 virtual-machine steps
        try:
            (due,) = conn.execute(Q["next_due"]).fetchone()
        finally:
            conn.set_progress_handler(None, 0)
        return due, steps

    # The queue's bound is early (11: row 1, leased since), which a claim corrects when
    # it visits the destination and finds rows 1-3 in flight and row 4 due at 14.
    assert (await store.run(count_steps))[0] == 11
    assert (await store.claim_due(12, 1_000, 10, 100)).deliveries == []
    due, hundreds_of_steps = await store.run(count_steps)
    assert due == 13  # the first lease to run out comes before the first unleased row (14)
    assert hundreds_of_steps * 100 < backlog  # a handful of rows read, not the backlog


async def test_group_commit_writes_again_without_each_bad_item() -> None:
    """The unit: a write that names a bad item by position; the rest are written."""
    writes: list[list[str]] = []

    async def write(items: Sequence[str]) -> list[str]:
        writes.append(list(items))
        for index, item in enumerate(items):
            if item.startswith("bad"):
                raise ItemFailed(index, ValueError(item))
        return [item.upper() for item in items]

    commit: GroupCommit[str, str] = GroupCommit(write)
    async with commit.running():
        results = await asyncio.gather(
            *(commit.submit(i) for i in ("a", "bad1", "b", "bad2", "c")), return_exceptions=True
        )
    assert [str(r) for r in results] == ["A", "bad1", "B", "bad2", "C"]
    assert [type(r) for r in results[1::2]] == [ValueError, ValueError]
    assert writes == [
        ["a", "bad1", "b", "bad2", "c"],
        ["a", "b", "bad2", "c"],
        ["a", "b", "c"],
    ]


async def test_group_commit_fails_every_caller_when_the_store_fails() -> None:
    async def write(items: Sequence[str]) -> list[str]:
        if len(items) > 1:
            raise StoreUnavailable("locked")
        raise ItemFailed(7, ValueError("no such item"))  # a bug: names no item of the batch

    commit: GroupCommit[str, str] = GroupCommit(write)
    async with commit.running():
        both = await asyncio.gather(commit.submit("a"), commit.submit("b"), return_exceptions=True)
        alone = await asyncio.gather(commit.submit("c"), return_exceptions=True)
    assert [type(r) for r in both] == [StoreUnavailable, StoreUnavailable]
    assert [type(r) for r in alone] == [ValueError]


async def test_an_alert_stored_as_a_made_up_event_is_migrated_to_an_honest_one(
    tmp_path: Path,
) -> None:
    """Before migration 4 an alert was a Hotmart-shaped event whose id, and whose
    delivery's key, were 'alert:' and the disabled destination's key."""
    db = tmp_path / "relay.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)"
    )
    for version, script in load_migrations(SQL_DIR):
        if version <= 3:
            conn.executescript(script)
            conn.execute("INSERT INTO schema_version VALUES (?, 1)", (version,))
    old_payload = json.dumps({"id": f"alert:{KEY}", "event": "DESTINATION_DISABLED"})
    conn.execute(
        "INSERT INTO events (id, producer_id, hotmart_id, event_name, source, outcome,"
        " payload_json, received_at_ms) VALUES (1, 'acme', ?, 'DESTINATION_DISABLED', 'relay',"
        " 'accepted', ?, 1234)",
        (f"alert:{KEY}:1234", old_payload),
    )
    conn.execute(
        "INSERT INTO deliveries (event_id, kind, producer_id, destination_key, channel,"
        " event_name, status, message_id, created_at_ms, updated_at_ms)"
        " VALUES (1, 'alert', 'acme', ?, 'email', 'DESTINATION_DISABLED', 'pending', 'm', 1, 1)",
        (f"alert:{KEY}",),
    )
    conn.close()
    async with open_sqlite_store(db) as store:
        (row,) = await store.history(HistoryFilter())
        detail = await store.delivery(row.id)
    assert (row.kind, row.destination_key) == ("alert", KEY)
    assert detail is not None
    carried = DestinationDisabled.model_validate_json(detail.event_payload_json)
    assert carried == DestinationDisabled(destination_key=KEY, disabled_at_ms=1234)
