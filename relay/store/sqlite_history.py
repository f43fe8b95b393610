"""The history's reads and the audit trail, as plain functions on aiosqlite's thread.

The deliveries list is composed from the named conditions of `history.sql`: one term
per filter given, so each filter can use its index (a `:x IS NULL OR` form would keep
SQLite from using any), and the parameters carry every value.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from relay.records import (
    AuditEntry,
    DeliveryRow,
    EventRecord,
    HistoryFilter,
    NewAuditEntry,
)
from relay.store.queries import load_queries
from relay.store.rows import audit_params
from relay.store.sqlite_statements import SQL_DIR, from_row

H = load_queries(SQL_DIR / "history.sql")

# HistoryFilter field -> the condition that tests it, when it is given.
_CONDITIONS = {
    "status": "history_status",
    "affiliate_code": "history_affiliate",
    "event_name": "history_event_name",
    "channel": "history_channel",
    "producer_id": "history_producer",
    "notification": "history_notification",
    "before_id": "history_before",
    "event_row_id": "history_event_row",
    "transaction_code": "history_transaction",
    "hotmart_id": "history_hotmart_id",
    "since_ms": "history_since",
    "until_ms": "history_until",
}


def history_statement(
    query: HistoryFilter, queries: dict[str, str] = H
) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters that list `query`'s rows, newest first, from the named
    conditions of `queries` (SQLite's history.sql, or PostgreSQL's)."""
    params: dict[str, Any] = {"limit": query.limit}
    terms = []
    for field, condition in _CONDITIONS.items():
        value = getattr(query, field)
        if value is not None:
            params[field] = value
            terms.append(queries[condition])
    if query.statuses:
        names = [f"status_{index}" for index in range(len(query.statuses))]
        params.update(zip(names, query.statuses, strict=True))
        terms.append(queries["history_statuses"].format(statuses=", ".join(f":{n}" for n in names)))
    where = "\nWHERE " + "\n  AND ".join(f"({term})" for term in terms) if terms else ""
    page = f"{queries['history_page']}{where}\n{queries['history_order']}"
    return queries["history_select"].format(page=page), params


def history(conn: sqlite3.Connection, query: HistoryFilter) -> list[DeliveryRow]:
    sql, params = history_statement(query)
    return [from_row(DeliveryRow, row) for row in _rows(conn, sql, params)]


def known_statuses(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute(H["known_statuses"])]


def event(conn: sqlite3.Connection, event_row_id: int) -> EventRecord | None:
    found = _rows(conn, H["event_row"], {"id": event_row_id})
    return from_row(EventRecord, found[0]) if found else None


def record_audit(conn: sqlite3.Connection, entry: NewAuditEntry, now_ms: int) -> int:
    params = audit_params(entry, now_ms)
    (audit_id,) = conn.execute(H["insert_audit"], params).fetchone()
    return int(audit_id)


def audit_log(
    conn: sqlite3.Connection, *, producer_id: str | None, before_id: int | None, limit: int
) -> list[AuditEntry]:
    page = "audit_page" if producer_id is None else "audit_page_of_producer"
    sql = f"{H['audit_select']}\n{H[page]}"
    params = {"producer_id": producer_id, "before_id": before_id, "limit": limit}
    return [_audit_entry(row) for row in _rows(conn, sql, params)]


def audit_entry(conn: sqlite3.Connection, audit_id: int) -> AuditEntry | None:
    found = _rows(conn, f"{H['audit_select']}\n{H['audit_entry']}", {"id": audit_id})
    return _audit_entry(found[0]) if found else None


def _audit_entry(row: sqlite3.Row) -> AuditEntry:
    return from_row(AuditEntry, row, delivery_ids=tuple(json.loads(row["delivery_ids"])))


def _rows(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[sqlite3.Row]:
    cursor = conn.execute(sql, params)
    cursor.row_factory = sqlite3.Row
    return cursor.fetchall()
