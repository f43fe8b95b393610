"""The deliveries list reads an index for every filter, so a page of a million-row history
costs what a page of a hundred does: its query plans, read with EXPLAIN QUERY PLAN."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.records import HistoryFilter, NewAuditEntry
from relay.store import Store
from relay.store.sqlite import SqliteStore, open_sqlite_store
from relay.store.sqlite_history import history_statement

ONE_FILTER = {
    "status": HistoryFilter(status="failed"),
    "sent tab": HistoryFilter(statuses=("delivered", "failed")),
    "affiliate": HistoryFilter(affiliate_code="K12345678M"),
    "event": HistoryFilter(event_name="PURCHASE_BILLET_PRINTED"),
    "channel": HistoryFilter(channel="webhook"),
    "producer": HistoryFilter(producer_id="acme"),
    "transaction": HistoryFilter(transaction_code="HP1764271200123"),
    "hotmart id": HistoryFilter(hotmart_id="6d2b4c1e"),
    "since": HistoryFilter(since_ms=1_764_000_000_000),
    "until": HistoryFilter(until_ms=1_764_000_000_000),
    "one event": HistoryFilter(event_row_id=7),
    "next page": HistoryFilter(before_id=1000),
}


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as opened:
        yield opened


def plan(db: Path, query: HistoryFilter) -> list[str]:
    sql, params = history_statement(query)
    conn = sqlite3.connect(db)
    try:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        conn.close()


@pytest.mark.parametrize("name", sorted(ONE_FILTER))
async def test_each_filter_is_served_by_an_index(
    sqlite_store: SqliteStore, tmp_path: Path, name: str
) -> None:
    steps = plan(tmp_path / "relay.sqlite3", ONE_FILTER[name])
    # A SCAN walks a whole table (or index); every step must be a SEARCH.
    assert not [step for step in steps if step.startswith("SCAN")], steps
    assert any(step.startswith("SEARCH d ") for step in steps), steps


async def test_filters_together_are_still_searched(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    query = HistoryFilter(
        statuses=("delivered", "failed"),
        affiliate_code="K12345678M",
        channel="email",
        producer_id="acme",
        since_ms=1,
        until_ms=2,
        before_id=1000,
    )
    steps = plan(tmp_path / "relay.sqlite3", query)
    assert not [step for step in steps if step.startswith("SCAN")], steps


async def test_the_unfiltered_list_walks_the_newest_rows_only(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    # No filter: the newest `limit` rows, read backwards along the primary key, no sort.
    steps = plan(tmp_path / "relay.sqlite3", HistoryFilter())
    assert "SCAN d" in steps
    assert not [step for step in steps if "TEMP B-TREE" in step], steps


async def test_known_statuses_and_the_audit_trail(store: Store) -> None:
    """On each backend (tests/store_backends.py)."""
    assert await store.known_statuses() == []
    first = await store.record_audit(
        NewAuditEntry("replay", "page", "127.0.0.1", "acme", "", (3, 4), "queued 3, 4"), 10
    )
    second = await store.record_audit(NewAuditEntry("disable", "api", "::1", target="k"), 20)
    assert second > first
    newest = await store.audit_log(limit=1)
    assert [entry.id for entry in newest] == [second]
    older = await store.audit_log(before_id=second)
    assert [(e.action, e.delivery_ids, e.at_ms) for e in older] == [("replay", (3, 4), 10)]
    assert [e.id for e in await store.audit_log(producer_id="acme")] == [first]
    assert await store.audit_entry(first) == older[0]
    assert await store.audit_entry(999) is None


def seed(db: Path, rows: int) -> None:
    """`rows` deliveries of as many events, statuses, affiliates and channels mixed, one
    second apart: through SQL, since the query's work is what is measured, not ingest."""
    statuses = ("delivered",) * 8 + ("failed", "pending", "withheld", "skipped", "ignored")
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO events (id, producer_id, hotmart_id, event_name, source, outcome,"
            " transaction_code, payload_json, received_at_ms) VALUES (?, 'acme', ?,"
            " 'PURCHASE_BILLET_PRINTED', '2.0.0', 'accepted', ?, '{}', ?)",
            [(i, f"h{i}", f"HP{i}", i * 1000) for i in range(1, rows + 1)],
        )
        conn.executemany(
            "INSERT INTO deliveries (id, event_id, producer_id, affiliate_code, destination_key,"
            " channel, event_name, status, message_id, created_at_ms, updated_at_ms)"
            " VALUES (?, ?, 'acme', ?, 'acme/a/mail', ?, 'PURCHASE_BILLET_PRINTED', ?, ?, ?, ?)",
            [
                (
                    i,
                    i,
                    f"A{i % 50}",
                    ("email", "webhook")[i % 2],
                    statuses[i % 13],
                    f"m{i}",
                    i * 1000,
                    i * 1000,
                )
                for i in range(1, rows + 1)
            ],
        )
        conn.executemany(
            "INSERT INTO attempts (delivery_id, attempt_no, started_at_ms, latency_ms, outcome,"
            " status_code) VALUES (?, 1, ?, 5.0, 'success', 200)",
            [(i, i * 1000) for i in range(1, rows + 1)],
        )
    conn.close()


def work(db: Path, query: HistoryFilter) -> int:
    """SQLite's virtual-machine steps (in thousands) for one page: work, not time."""
    sql, params = history_statement(query)
    conn = sqlite3.connect(db)
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1000)
    try:
        conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    return steps[0]


async def test_a_page_costs_the_same_on_a_history_ten_times_larger(tmp_path: Path) -> None:
    sizes = {"small": 3_000, "large": 30_000}
    dbs = {}
    for name, rows in sizes.items():
        dbs[name] = tmp_path / name / "relay.sqlite3"
        dbs[name].parent.mkdir()
        async with open_sqlite_store(dbs[name]):
            pass
        seed(dbs[name], rows)
    queries = {
        **ONE_FILTER,
        "none": HistoryFilter(),
        "hotmart id": HistoryFilter(hotmart_id="h77"),
        "transaction": HistoryFilter(transaction_code="HP77"),
        "since": HistoryFilter(since_ms=1_500_000, status="failed"),
        "until": HistoryFilter(until_ms=2_000_000),
        "one event": HistoryFilter(event_row_id=77),
        "next page": HistoryFilter(before_id=2_000),
    }
    grew = {}
    for name, query in queries.items():
        small, large = work(dbs["small"], query), work(dbs["large"], query)
        if large > 2 * small + 2:
            grew[name] = (small, large)
    assert grew == {}  # (thousands of steps on 3,000 rows, on 30,000)
