"""The statements of sale recovery's reads (issue 11), run on SQLite's thread.

Like `sqlite_statements`, plain synchronous functions that `SqliteStore` runs in one
hop. What ingest writes for recovery (reminders cancelled, whichever event comes
first) is in `sqlite_statements.insert_event`, inside the ingest transaction.
"""

from __future__ import annotations

import json
import sqlite3

from relay.hotmart import EXPIRED_EVENT, PAID_EVENTS
from relay.records import FollowUpFacts, Notice, NotifiedSlip, RecoveryFigures
from relay.store.sqlite_statements import SETTLING_JSON, Q, from_row, named_rows

_PAID_JSON = json.dumps(sorted(PAID_EVENTS))


def follow_up_facts(
    conn: sqlite3.Connection, producer_id: str, transaction_code: str
) -> FollowUpFacts:
    """A slip row counts once it is delivered, sent at least once, or on its way (queued
    or in flight): a Pix code is often paid within a minute, before its mail is out."""
    sale = {"producer_id": producer_id, "transaction_code": transaction_code}
    notified: list[NotifiedSlip] = []
    sent: set[tuple[str, Notice]] = set()
    for row in named_rows(conn, "transaction_notices", sale):
        if row["notification"] != Notice.SLIP:
            sent.add((row["destination_key"], Notice(row["notification"])))
        elif row["status"] in ("delivered", "pending") or row["attempts"] > 0:
            notified.append(
                NotifiedSlip(
                    row["id"], row["affiliate_code"], row["destination_key"], row["channel"]
                )
            )
    return FollowUpFacts(
        tuple(notified), frozenset(sent), _paid(conn, producer_id, transaction_code)
    )


def _paid(conn: sqlite3.Connection, producer_id: str, transaction_code: str) -> bool:
    params = {
        "producer_id": producer_id,
        "transaction_code": transaction_code,
        "settling": _PAID_JSON,
    }
    return conn.execute(Q["settling_event"], params).fetchone() is not None


def settling_event(conn: sqlite3.Connection, producer_id: str, transaction_code: str) -> str | None:
    params = {
        "producer_id": producer_id,
        "transaction_code": transaction_code,
        "settling": SETTLING_JSON,
    }
    row = conn.execute(Q["settling_event"], params).fetchone()
    return None if row is None else str(row[0])


def recovery_figures(
    conn: sqlite3.Connection, since_ms: int, producer_id: str | None, affiliate_code: str | None
) -> list[RecoveryFigures]:
    params = {
        "since_ms": since_ms,
        "producer_id": producer_id,
        "affiliate_code": affiliate_code,
        "paid_events": _PAID_JSON,
        "expired_event": EXPIRED_EVENT,
    }
    return [from_row(RecoveryFigures, row) for row in named_rows(conn, "recovery_figures", params)]
