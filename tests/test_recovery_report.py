"""The figure producers want (issue 11 §6): slips notified, paid, expired and the median
time to pay, per affiliate and per producer, computed by the store through its indexes;
and `relay recovery`, which prints them."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.records import DeliveryStatus, NewDelivery, NewEvent, Notice, RecoveryFigures
from relay.recovery_report import recovery_report
from relay.store import Store
from relay.store.sqlite import SqliteStore, open_sqlite_store
from relay.store.sqlite_statements import Q
from tests.recovery_kit import HOUR_MS
from tests.store_backends import execute_sql
from tests.test_cli import run_cli

T0 = 1_764_000_000_000
_ids = itertools.count(1)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as opened:
        yield opened


async def event(
    store: Store,
    name: str,
    transaction: str,
    at_ms: int,
    *rows: NewDelivery,
    producer: str = "acme",
) -> None:
    new = NewEvent(
        producer, f"{name}-{transaction}-{next(_ids)}", name, "2.0.0", transaction, "1", "{}", rows
    )
    await store.ingest(new, at_ms)


def slip_row(affiliate: str, status: DeliveryStatus, key: str = "mail") -> NewDelivery:
    return NewDelivery(
        status,
        "r",
        f"msg_{affiliate}_{key}",
        affiliate,
        f"acme/{affiliate}/{key}",
        "email",
        notification=Notice.SLIP,
    )


async def slip(
    store: Store,
    affiliate: str,
    transaction: str,
    at_ms: int,
    *,
    sent: bool = True,
    producer: str = "acme",
    destinations: tuple[str, ...] = ("mail",),
) -> None:
    """A slip notified to `affiliate` (delivered), or not sent yet (`sent=False`)."""
    status = DeliveryStatus.DELIVERED if sent else DeliveryStatus.PENDING
    rows = [slip_row(affiliate, status, key) for key in destinations]
    await event(store, "PURCHASE_BILLET_PRINTED", transaction, at_ms, *rows, producer=producer)


async def sale_history(store: Store) -> None:
    """acme: A was notified 6 slips (paid after 2 h, 4 h and 6 h, the last after it had
    expired; one expired; one open; one failed after its tries, which counts as sent),
    and two more that do not count (never sent, withheld); B one, paid after 1 h. other:
    one, whose approval came first."""
    await slip(store, "A", "T1", T0, destinations=("mail", "hook"))  # counted once
    await event(store, "PURCHASE_APPROVED", "T1", T0 + 2 * HOUR_MS)
    await event(store, "PURCHASE_COMPLETE", "T1", T0 + 30 * HOUR_MS)  # the first one counts
    await slip(store, "A", "T2", T0)
    await event(store, "PURCHASE_APPROVED", "T2", T0 + 4 * HOUR_MS)
    await slip(store, "A", "T3", T0)
    await event(store, "PURCHASE_EXPIRED", "T3", T0 + 48 * HOUR_MS)
    await slip(store, "A", "T4", T0)  # open
    await slip(store, "A", "T5", T0)
    await event(store, "PURCHASE_EXPIRED", "T5", T0 + HOUR_MS)
    await event(store, "PURCHASE_APPROVED", "T5", T0 + 6 * HOUR_MS)  # paid after all
    await slip(store, "A", "T6", T0, sent=False)  # not sent: not notified
    await event(store, "PURCHASE_APPROVED", "T6", T0 + HOUR_MS)
    await event(store, "PURCHASE_BILLET_PRINTED", "T7", T0, slip_row("A", DeliveryStatus.WITHHELD))
    await slip(store, "B", "T8", T0)
    await event(store, "PURCHASE_APPROVED", "T8", T0 + HOUR_MS)
    await slip(store, "A", "T9", T0, producer="other")
    await event(store, "PURCHASE_APPROVED", "T9", T0 - HOUR_MS, producer="other")  # first
    # A slip sent once that failed still reached the affiliate's attention: counted.
    await slip(store, "A", "T10", T0, sent=False)
    await execute_sql(
        store,
        "UPDATE deliveries SET status = 'failed', attempts = 5 WHERE message_id = 'msg_A_mail'"
        " AND event_id = (SELECT id FROM events WHERE transaction_code = 'T10')",
    )


async def test_figures_per_affiliate_and_producer(store: Store) -> None:
    await sale_history(store)
    figures = await store.recovery_figures(T0 - HOUR_MS)
    assert figures == [
        RecoveryFigures("acme", "A", notified=6, paid=3, expired=1, median_ms_to_pay=4 * HOUR_MS),
        RecoveryFigures("acme", "B", notified=1, paid=1, expired=0, median_ms_to_pay=HOUR_MS),
        RecoveryFigures(
            "acme", None, notified=7, paid=4, expired=1, median_ms_to_pay=3 * HOUR_MS
        ),  # 1 h, 2 h | 4 h, 6 h
        RecoveryFigures("other", "A", notified=1, paid=1, expired=0, median_ms_to_pay=0),
        RecoveryFigures("other", None, notified=1, paid=1, expired=0, median_ms_to_pay=0),
    ]
    assert [row.open for row in figures] == [2, 0, 2, 0, 0]


async def test_figures_of_one_producer_or_affiliate_and_since_a_moment(
    store: Store,
) -> None:
    await sale_history(store)
    only_b = await store.recovery_figures(0, producer_id="acme", affiliate_code="B")
    assert [(r.affiliate_code, r.notified) for r in only_b] == [("B", 1), (None, 1)]
    assert await store.recovery_figures(T0 + 1) == []  # every slip came before
    report = await recovery_report(store, T0 + 24 * HOUR_MS)  # the default: 30 days back
    assert report.since_ms == T0 + 24 * HOUR_MS - 30 * 24 * HOUR_MS
    assert report.slips_by_outcome() == {"paid": 5, "expired": 1, "open": 2}
    assert [r.affiliate_code for r in report.affiliates] == ["A", "B", "A"]


async def test_the_report_reads_only_through_indexes(sqlite_store: SqliteStore) -> None:
    store = sqlite_store
    """No full scan of deliveries or events, however long the history."""
    params = {
        "since_ms": 0,
        "producer_id": None,
        "affiliate_code": None,
        "paid_events": "[]",
        "expired_event": "PURCHASE_EXPIRED",
    }
    plan = await store.run(
        lambda c: [
            row[-1] for row in c.execute("EXPLAIN QUERY PLAN " + Q["recovery_figures"], params)
        ]
    )
    tables = [line for line in plan if re.match(r"(SCAN|SEARCH) (d|e|p|x)\b", line)]
    assert tables and all(line.startswith("SEARCH") for line in tables), plan
    assert any("deliveries_slip_notices" in line for line in tables)


async def test_the_migration_names_what_older_rows_said(tmp_path: Path) -> None:
    """Rows stored before migration 7 say slip or event as their event does."""
    path = tmp_path / "old.sqlite3"
    async with open_sqlite_store(path) as opened:
        await slip(opened, "A", "T1", T0)
        await event(
            opened,
            "PURCHASE_APPROVED",
            "T1",
            T0,
            NewDelivery(DeliveryStatus.DELIVERED, "r", "msg_x", "A", "acme/A/mail", "email"),
        )
    conn = sqlite3.connect(path)
    conn.execute("UPDATE deliveries SET notification = NULL")
    conn.execute("DELETE FROM schema_version WHERE version >= 7")
    # What migration 8 added goes too: the store is as it was before migration 7.
    conn.executescript(
        "DROP TRIGGER destination_queue_on_update;"
        " DROP TABLE destination_queue; DROP INDEX deliveries_pending_by_destination;"
    )
    conn.execute("DROP INDEX deliveries_slip_notices")
    conn.execute("ALTER TABLE deliveries DROP COLUMN notification")
    conn.commit()
    conn.close()
    async with open_sqlite_store(path) as reopened:
        rows = await reopened.run(
            lambda c: c.execute("SELECT event_name, notification FROM deliveries").fetchall()
        )
        assert sorted(rows) == [("PURCHASE_APPROVED", "event"), ("PURCHASE_BILLET_PRINTED", "slip")]
        assert [r.notified for r in await reopened.recovery_figures(0)] == [1, 1]


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(
        f'[storage]\nsqlite_path = "{tmp_path / "relay.sqlite3"}"\n'
        "[recovery]\n"
        '[[producers]]\nid = "acme"\nhottok = "t"\n',
        encoding="utf-8",
    )
    return path


async def test_relay_recovery_prints_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_sqlite_store(tmp_path / "relay.sqlite3") as opened:
        await sale_history(opened)
    path = write_config(tmp_path)
    assert await run_cli(path, "recovery", "--since", "2025-11-24") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "slips notified since 2025-11-24 00:00:00 UTC"
    assert lines[1].split() == [
        "PRODUCER",
        "AFFILIATE",
        "NOTIFIED",
        "PAID",
        "EXPIRED",
        "OPEN",
        "MEDIAN",
        "TIME",
        "TO",
        "PAY",
    ]
    assert lines[2].split() == ["acme", "A", "6", "3", "1", "2", "4h"]
    assert lines[4].split() == ["acme", "(all)", "7", "4", "1", "2", "3h"]
    assert lines[5].split() == ["other", "A", "1", "1", "0", "0", "0s"]

    chosen = ("--producer", "acme", "--affiliate", "B")
    assert await run_cli(path, "recovery", "--since", "2025-11-24", "--json", *chosen) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert report["rows"] == [
        {
            "producer_id": "acme",
            "affiliate_code": "B",
            "notified": 1,
            "paid": 1,
            "expired": 0,
            "open": 0,
            "median_s_to_pay": 3600.0,
        },
        {
            "producer_id": "acme",
            "affiliate_code": None,
            "notified": 1,
            "paid": 1,
            "expired": 0,
            "open": 0,
            "median_s_to_pay": 3600.0,
        },
    ]
    assert await run_cli(path, "recovery") == 0  # the last 30 days: none
    assert capsys.readouterr().out.splitlines()[1] == "none"


async def test_the_slips_a_paid_event_follows_up(store: Store) -> None:
    """Delivered, sent once, or still on its way (a Pix code is often paid before its
    mail is out) all count; a withheld or skipped slip never went anywhere."""
    await slip(store, "A", "T1", T0, destinations=("mail",))
    await slip(store, "B", "T1", T0, sent=False)  # queued: on its way
    await event(
        store,
        "PURCHASE_BILLET_PRINTED",
        "T1",
        T0,
        slip_row("C", DeliveryStatus.WITHHELD),
        slip_row("D", DeliveryStatus.SKIPPED),
    )
    await event(
        store,
        "PURCHASE_APPROVED",
        "T1",
        T0,
        NewDelivery(
            DeliveryStatus.DELIVERED,
            "r",
            "m1",
            "A",
            "acme/A/mail",
            "email",
            notification=Notice.PAID,
        ),
    )
    facts = await store.follow_up_facts("acme", "T1")
    assert [(s.affiliate_code, s.destination_key) for s in facts.notified] == [
        ("A", "acme/A/mail"),
        ("B", "acme/B/mail"),
    ]
    assert facts.sent == frozenset({("acme/A/mail", Notice.PAID)})
    assert facts.paid
    assert await store.follow_up_facts("other", "T1") == type(facts)()
