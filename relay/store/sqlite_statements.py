"""The statements one SQLite transaction runs, as plain synchronous functions.

They exist apart from `SqliteStore` because they run on aiosqlite's worker thread
inside one transaction: the store hands a whole batch over in one hop, and these do
every statement of it there, with no await between them (see `SqliteStore.run`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from relay.hotmart import SETTLING_EVENTS, reminder_cancel_reason
from relay.records import (
    AttemptResolution,
    Channel,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthChange,
    HealthEffect,
    IngestResult,
    NewAlert,
    NewDelivery,
    NewEvent,
    Notice,
    UnreadableRow,
)
from relay.store import StoreRejected
from relay.store.group_commit import ItemFailed
from relay.store.queries import load_queries
from relay.store.rows import (
    Outcome,
    alert_event,
    attempt_params,
    delivery_params,
    event_params,
    failures_disable_reason,
    gone_disable_reason,
    reminders_cancelled,
    resolve_params,
    sendable,
)
from relay.store.sqlite_connection import is_store_fault

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Item = TypeVar("Item")
Result = TypeVar("Result")
Record = TypeVar("Record", bound="DataclassInstance")

SQL_DIR = Path(__file__).parent / "sql" / "sqlite"
# The named statements of queries.sql (`-- name: x` blocks), read once at import.
Q = load_queries(SQL_DIR / "queries.sql")
SETTLING_JSON = json.dumps(sorted(SETTLING_EVENTS))
# What a claimed row may say, checked per row (built once: a claim reads many rows).
_KINDS = frozenset(k.value for k in DeliveryKind)
_CHANNELS = frozenset(c.value for c in Channel)
_NOTICES = frozenset(n.value for n in Notice)


def named_rows(
    conn: sqlite3.Connection, query: str, params: Mapping[str, Any] | None = None
) -> list[sqlite3.Row]:
    """The rows of the named query, each readable by column name."""
    cursor = conn.execute(Q[query], params or {})
    cursor.row_factory = sqlite3.Row
    return cursor.fetchall()


def from_row(record: type[Record], row: sqlite3.Row, **values: Any) -> Record:
    """A record whose every field is read from the column of its name (or given in
    `values`): the SQL may list its columns in any order."""
    return record(
        **{f.name: values[f.name] if f.name in values else row[f.name] for f in fields(record)}
    )


def write_each(items: Sequence[Item], write_one: Callable[[Item], Result]) -> list[Result]:
    """Write a batch item by item in the open transaction; name the item at fault.

    A failure of the store itself (locked, full) propagates as it is: every caller hears
    it. A failure of one item becomes `ItemFailed`, so the group commit can write the
    rest again without it. The transaction is rolled back either way.
    """
    results = []
    for index, item in enumerate(items):
        try:
            results.append(write_one(item))
        except Exception as exc:
            if is_store_fault(exc):
                raise
            raise ItemFailed(index, StoreRejected(rejection(exc))) from exc
    return results


def rejection(exc: BaseException) -> str:
    """Why a row could not be stored: SQLite's own words, or the Python error's type.

    Python's messages may quote the value (buyer data); SQLite's name a constraint.
    """
    if isinstance(exc, sqlite3.Error):
        return f"cannot be stored: {exc}"
    return f"cannot be stored: {type(exc).__name__}"


def record_outcome(conn: sqlite3.Connection, outcome: Outcome, now_ms: int) -> HealthChange:
    """Record one attempt, only if the row still holds the writer's lease (the fence)."""
    moved = conn.execute(Q["resolve_delivery"], resolve_params(outcome, now_ms))
    if moved.rowcount == 0:  # the lease ran out and another claim took the row: not ours
        return HealthChange(disabled_now=False, consecutive_failures=0, recorded=False)
    conn.execute(Q["insert_attempt"], attempt_params(outcome.attempt))
    return _update_health(
        conn,
        outcome.destination_key,
        outcome.resolution,
        outcome.disable_after_failures,
        outcome.alert,
        now_ms,
    )


def record_outcomes(
    conn: sqlite3.Connection, batch: Sequence[tuple[Outcome, int, float]]
) -> list[HealthChange]:
    """Record a batch of outcomes: a batch of plain successes in a few `executemany`
    calls, anything else (or a fence that does not hold) one by one.

    In a drain almost every batch is successes: statement by statement each costs four
    round trips into SQLite, all of them on the thread ingest commits on too. The fast
    path runs in a savepoint: if any row no longer holds its lease, it is undone and the
    batch goes one by one, so the fence holds exactly as in `record_outcome`.
    """
    outcomes = [outcome for outcome, _, _ in batch]
    if len(batch) > 1 and all(o.resolution.health == HealthEffect.SUCCESS for o in outcomes):
        conn.execute("SAVEPOINT outcomes")
        try:
            recorded = _record_successes(conn, batch)
        except sqlite3.Error as exc:
            if is_store_fault(exc):
                raise  # the whole transaction is undone, and every caller hears it
            recorded = False  # one item at fault: the path below names it
        if not recorded:
            conn.execute("ROLLBACK TO outcomes")
        conn.execute("RELEASE outcomes")
        if recorded:
            return [HealthChange(disabled_now=False, consecutive_failures=0)] * len(batch)
    return write_each(batch, lambda item: record_outcome(conn, item[0], item[1]))


def _record_successes(
    conn: sqlite3.Connection, batch: Sequence[tuple[Outcome, int, float]]
) -> bool:
    """The fast path of `record_outcomes`; False (and the caller undoes it) unless every
    row still held its lease."""
    moved = conn.executemany(
        Q["resolve_delivery"], [resolve_params(outcome, now_ms) for outcome, now_ms, _ in batch]
    )
    if moved.rowcount != len(batch):
        return False
    conn.executemany(Q["insert_attempt"], [attempt_params(o.attempt) for o, _, _ in batch])
    latest: dict[str, int] = {}
    for outcome, now_ms, _ in batch:
        latest[outcome.destination_key] = max(now_ms, latest.get(outcome.destination_key, 0))
    health = [{"key": key, "now_ms": now_ms} for key, now_ms in latest.items()]
    conn.executemany(Q["ensure_destination"], health)
    conn.executemany(Q["destination_success"], health)
    return True


def insert_event(conn: sqlite3.Connection, event: NewEvent, now_ms: int) -> IngestResult:
    params = {**event_params(event), "now_ms": now_ms}
    row = conn.execute(Q["insert_event"], params).fetchone()
    if row is None:
        existing = conn.execute(Q["find_event"], params).fetchone()
        return IngestResult("duplicate", int(existing[0]), 0)
    event_row_id = int(row[0])
    deliveries = _settle_reminders(conn, event, now_ms)
    conn.executemany(
        Q["insert_delivery"], [delivery_params(event_row_id, event, d, now_ms) for d in deliveries]
    )
    queue_destinations(
        conn,
        [
            (d.destination_key, d.due_at_ms or now_ms)
            for d in deliveries
            if d.status == DeliveryStatus.PENDING
        ],
    )
    return IngestResult(event.outcome, event_row_id, sendable(deliveries))


def queue_destinations(
    conn: sqlite3.Connection, due: Sequence[tuple[str | None, int | None]]
) -> None:
    """Rows just inserted: move each destination's claim bound (destination_queue) to
    the earliest of them that is pending (a due time); rows not pending have none."""
    earliest: dict[str, int] = {}
    for key, due_ms in due:
        if key is not None and due_ms is not None:
            earliest[key] = min(due_ms, earliest.get(key, due_ms))
    if earliest:
        conn.executemany(
            Q["queue_destinations"], [{"key": k, "due_ms": v} for k, v in earliest.items()]
        )


def _settle_reminders(conn: sqlite3.Connection, event: NewEvent, now_ms: int) -> list[NewDelivery]:
    """Sale recovery's bookkeeping, in the ingest transaction, so that the order events
    arrive in never matters: a settling event cancels its transaction's reminders still
    waiting, and a reminder of a purchase that settled first is stored cancelled."""
    rows = list(event.deliveries)
    if not event.transaction_code:
        return rows
    sale = {"producer_id": event.producer_id, "transaction_code": event.transaction_code}
    if event.event_name in SETTLING_EVENTS:
        reason = reminder_cancel_reason(event.event_name)
        conn.execute(Q["cancel_reminders"], {**sale, "reason": reason, "now_ms": now_ms})
    if any(d.notification == Notice.REMINDER for d in rows):
        settled = conn.execute(Q["settling_event"], {**sale, "settling": SETTLING_JSON}).fetchone()
        if settled is not None:
            rows = reminders_cancelled(rows, reminder_cancel_reason(settled[0]))
    return rows


def insert_alert(conn: sqlite3.Connection, alert: NewAlert, now_ms: int) -> None:
    insert_event(conn, alert_event(alert), now_ms)


def _update_health(
    conn: sqlite3.Connection,
    key: str,
    resolution: AttemptResolution,
    disable_after_failures: int,
    alert: NewAlert | None,
    now_ms: int,
) -> HealthChange:
    effect = resolution.health
    if effect == HealthEffect.NONE:
        return HealthChange(disabled_now=False, consecutive_failures=0)
    params: dict[str, Any] = {"key": key, "now_ms": now_ms, "error": resolution.last_error}
    conn.execute(Q["ensure_destination"], params)
    if effect == HealthEffect.SUCCESS:
        conn.execute(Q["destination_success"], params)
        return HealthChange(disabled_now=False, consecutive_failures=0)
    conn.execute(Q["destination_error"], params)
    failures = 0
    disable_reason = ""
    if effect == HealthEffect.FAILED:
        failures, enabled = conn.execute(Q["destination_failed"], params).fetchone()
        if enabled and failures >= disable_after_failures:
            disable_reason = failures_disable_reason(failures, resolution.last_error)
    elif effect == HealthEffect.GONE:
        disable_reason = gone_disable_reason(resolution.last_error)
    if not disable_reason:
        return HealthChange(disabled_now=False, consecutive_failures=failures)
    disabled = conn.execute(Q["disable_destination"], {**params, "reason": disable_reason})
    disabled_now = disabled.rowcount == 1
    if disabled_now and alert is not None:
        insert_alert(conn, alert, now_ms)
    return HealthChange(disabled_now=disabled_now, consecutive_failures=failures)


def claimed_delivery(row: sqlite3.Row | Mapping[str, Any]) -> ClaimedDelivery | str:
    """The claimed row, or why it cannot be read (then it is failed, not attempted)."""
    if row["kind"] not in _KINDS:
        return f"cannot be read: unknown kind {str(row['kind'])[:40]!r}"
    if row["channel"] not in _CHANNELS:
        return f"cannot be read: unknown channel {str(row['channel'])[:40]!r}"
    if row["notification"] is not None and row["notification"] not in _NOTICES:
        return f"cannot be read: unknown notification {str(row['notification'])[:40]!r}"
    if not row["destination_key"]:
        return "cannot be read: no destination"
    if not row["payload_is_json"]:
        return "cannot be read: the stored event payload is not JSON"
    return ClaimedDelivery(
        id=row["id"],
        kind=DeliveryKind(row["kind"]),
        producer_id=row["producer_id"],
        affiliate_code=row["affiliate_code"],
        destination_key=row["destination_key"],
        channel=Channel(row["channel"]),
        event_name=row["event_name"],
        message_id=row["message_id"],
        attempts=row["attempts"],
        replayed_after=row["replayed_after"],
        payload_json=row["payload_json"],
        hotmart_id=row["hotmart_id"],
        lease_token=row["lease_token"],
        notification=None if row["notification"] is None else Notice(row["notification"]),
    )


def read_claimed(
    conn: sqlite3.Connection, ids: list[int], now_ms: int
) -> tuple[list[ClaimedDelivery], list[UnreadableRow]]:
    """The claimed rows; any that cannot be read is failed here, so it never kills a claim."""
    deliveries, unreadable = [], []
    for row in named_rows(conn, "claimed_rows", {"ids": json.dumps(ids)}):
        try:
            read = claimed_delivery(row)
        except Exception as exc:  # whatever else is wrong with it: the type, never the data
            read = f"cannot be read: {type(exc).__name__}"
        if isinstance(read, str):
            params = {"id": row["id"], "reason": read, "now_ms": now_ms}
            conn.execute(Q["fail_unreadable"], params)
            unreadable.append(UnreadableRow(row["id"], read))
        else:
            deliveries.append(read)
    return deliveries, unreadable
