"""The PostgreSQL store's reads and small operator writes: history, audit, recovery,
withheld rows and their regrant, and retention's scrub; each on one connection.

Twins of `sqlite_history`, `sqlite_recovery`, `sqlite_regrant` and `sqlite_maintenance`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from relay.hotmart import EXPIRED_EVENT, PAID_EVENTS
from relay.records import (
    AuditEntry,
    DeliveryRow,
    DeliveryStatus,
    EventRecord,
    FollowUpFacts,
    HistoryFilter,
    NewAuditEntry,
    Notice,
    NotifiedSlip,
    RecoveryFigures,
    Regrant,
    RegrantResult,
    Replacement,
    ScrubbedEvent,
    ScrubCandidate,
    ScrubCounts,
    WithheldRow,
)
from relay.store.postgres_connection import SQL_DIR, compile_named, load_statements
from relay.store.postgres_statements import SETTLING, execute, rows, value
from relay.store.queries import load_queries
from relay.store.rows import (
    audit_params,
    redecided_params,
    regrant_params,
    superseded_reason,
)
from relay.store.sqlite_history import history_statement
from relay.store.sqlite_statements import from_row

H = load_queries(SQL_DIR / "history.sql")
HS = load_statements(SQL_DIR / "history.sql")
PAID = sorted(PAID_EVENTS)


async def history(conn: asyncpg.Connection, query: HistoryFilter) -> list[DeliveryRow]:
    sql, params = history_statement(query, H)
    statement = compile_named(sql)
    found = await conn.fetch(statement.sql, *statement.args(params))
    return [from_row(DeliveryRow, row) for row in found]


async def known_statuses(conn: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await conn.fetch(HS["known_statuses"].sql)]


async def event(conn: asyncpg.Connection, event_row_id: int) -> EventRecord | None:
    found = await conn.fetch(HS["event_row"].sql, event_row_id)
    return from_row(EventRecord, found[0]) if found else None


async def record_audit(conn: asyncpg.Connection, entry: NewAuditEntry, now_ms: int) -> int:
    statement = HS["insert_audit"]
    params = audit_params(entry, now_ms)
    return int(await conn.fetchval(statement.sql, *statement.args(params)))


async def audit_log(
    conn: asyncpg.Connection, *, producer_id: str | None, before_id: int | None, limit: int
) -> list[AuditEntry]:
    page = "audit_page" if producer_id is None else "audit_page_of_producer"
    statement = compile_named(f"{H['audit_select']}\n{H[page]}")
    params = {"producer_id": producer_id, "before_id": before_id, "limit": limit}
    return [_audit_entry(row) for row in await conn.fetch(statement.sql, *statement.args(params))]


async def audit_entry(conn: asyncpg.Connection, audit_id: int) -> AuditEntry | None:
    statement = compile_named(f"{H['audit_select']}\n{H['audit_entry']}")
    found = await conn.fetch(statement.sql, audit_id)
    return _audit_entry(found[0]) if found else None


def _audit_entry(row: asyncpg.Record) -> AuditEntry:
    return from_row(AuditEntry, row, delivery_ids=tuple(json.loads(row["delivery_ids"])))


# -- sale recovery ----------------------------------------------------------------------


async def follow_up_facts(
    conn: asyncpg.Connection, producer_id: str, transaction_code: str
) -> FollowUpFacts:
    """As `sqlite_recovery.follow_up_facts`."""
    sale = {"producer_id": producer_id, "transaction_code": transaction_code}
    notified: list[NotifiedSlip] = []
    sent: set[tuple[str, Notice]] = set()
    for row in await rows(conn, "transaction_notices", sale):
        if row["notification"] != Notice.SLIP:
            sent.add((row["destination_key"], Notice(row["notification"])))
        elif row["status"] in ("delivered", "pending") or row["attempts"] > 0:
            notified.append(
                NotifiedSlip(
                    row["id"], row["affiliate_code"], row["destination_key"], row["channel"]
                )
            )
    paid = await value(conn, "settling_event", {**sale, "settling": PAID})
    return FollowUpFacts(tuple(notified), frozenset(sent), paid is not None)


async def settling_event(
    conn: asyncpg.Connection, producer_id: str, transaction_code: str
) -> str | None:
    params = {"producer_id": producer_id, "transaction_code": transaction_code}
    found = await value(conn, "settling_event", {**params, "settling": SETTLING})
    return None if found is None else str(found)


async def recovery_figures(
    conn: asyncpg.Connection, since_ms: int, producer_id: str | None, affiliate_code: str | None
) -> list[RecoveryFigures]:
    params = {
        "since_ms": since_ms,
        "producer_id": producer_id,
        "affiliate_code": affiliate_code,
        "paid_events": PAID,
        "expired_event": EXPIRED_EVENT,
    }
    found = await rows(conn, "recovery_figures", params)
    return [from_row(RecoveryFigures, row) for row in found]


# -- withheld rows decided again ----------------------------------------------------------


async def withheld_rows(conn: asyncpg.Connection, params: dict[str, Any]) -> list[WithheldRow]:
    return [
        from_row(WithheldRow, row, event_keys=frozenset(row["event_keys"]))
        for row in await rows(conn, "withheld_rows", params)
    ]


async def regrant(
    conn: asyncpg.Connection,
    regrants: Sequence[Regrant],
    replacements: Sequence[Replacement],
    now_ms: int,
) -> RegrantResult:
    """As `sqlite_regrant.regrant`: a row no longer withheld is left as it is."""
    result = RegrantResult()
    for change in regrants:
        if await value(conn, "regrant", regrant_params(change, now_ms)) is None:
            continue
        if change.status == DeliveryStatus.PENDING:
            result.pending.append(change.delivery_id)
        else:
            result.withheld.append((change.delivery_id, change.reason))
    for replacement in replacements:
        await _replace(conn, replacement, now_ms, result)
    return result


async def _replace(
    conn: asyncpg.Connection, replacement: Replacement, now_ms: int, result: RegrantResult
) -> None:
    ids = list(replacement.delivery_ids)
    still = [row["id"] for row in await rows(conn, "still_withheld", {"ids": ids})]
    if not still:
        return
    created: list[tuple[int, DeliveryStatus]] = []
    for new in replacement.deliveries:
        new_id = await value(conn, "insert_redecided", redecided_params(replacement, new, now_ms))
        if new_id is not None:
            created.append((int(new_id), new.status))
    if not created:
        return
    reason = superseded_reason(created)
    for old_id in still:
        await execute(conn, "supersede", {"id": old_id, "reason": reason, "now_ms": now_ms})
        result.replaced.append((old_id, [new_id for new_id, _ in created]))
    result.pending.extend(new_id for new_id, status in created if status == DeliveryStatus.PENDING)


# -- retention ------------------------------------------------------------------------------


async def scrub_candidates(
    conn: asyncpg.Connection, before_ms: int, after: tuple[int, int], limit: int
) -> list[ScrubCandidate]:
    params = {"before_ms": before_ms, "after_ms": after[0], "after_id": after[1], "limit": limit}
    return [ScrubCandidate(*row) for row in await rows(conn, "scrub_candidates", params)]


async def scrub(
    conn: asyncpg.Connection, events: Sequence[ScrubbedEvent], now_ms: int
) -> ScrubCounts:
    scrubbed_events = scrubbed_attempts = 0
    for scrubbed in events:
        params = {
            "id": scrubbed.event_row_id,
            "payload_json": scrubbed.payload_json,
            "now_ms": now_ms,
        }
        if await execute(conn, "scrub_event", params):
            scrubbed_events += 1
            scrubbed_attempts += await execute(
                conn, "scrub_attempts_of_event", {"id": params["id"]}
            )
    return ScrubCounts(events=scrubbed_events, attempts=scrubbed_attempts)
