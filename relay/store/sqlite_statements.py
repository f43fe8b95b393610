"""The statements one SQLite transaction runs, as plain synchronous functions.

They exist apart from `SqliteStore` because they run on aiosqlite's worker thread
inside one transaction: the store hands a whole batch over in one hop, and these do
every statement of it there, with no await between them (see `SqliteStore.run`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.store.queries import load_queries
from relay.store.records import (
    AttemptRecord,
    AttemptResolution,
    ClaimedDelivery,
    DeliveryKind,
    DeliveryStatus,
    HealthChange,
    HealthEffect,
    IngestResult,
    NewEvent,
)

SQL_DIR = Path(__file__).parent / "sql" / "sqlite"
# The named statements of queries.sql (`-- name: x` blocks), read once at import.
Q = load_queries(SQL_DIR / "queries.sql")


@dataclass(frozen=True)
class Outcome:
    """One attempt's result waiting in the outcome group commit to be recorded."""

    attempt: AttemptRecord
    resolution: AttemptResolution
    destination_key: str
    disable_after_failures: int
    alert: NewEvent | None


def record_outcome(conn: sqlite3.Connection, outcome: Outcome, now_ms: int) -> HealthChange:
    attempt, resolution = outcome.attempt, outcome.resolution
    conn.execute(Q["insert_attempt"], _attempt_params(attempt))
    conn.execute(
        Q["resolve_delivery"],
        {
            "delivery_id": attempt.delivery_id,
            "attempt_no": attempt.attempt_no,
            "status": resolution.status.value,
            "next_attempt_at_ms": resolution.next_attempt_at_ms,
            "last_error": resolution.last_error,
            "reason": resolution.last_error or "delivered",
            "now_ms": now_ms,
        },
    )
    return _update_health(
        conn,
        outcome.destination_key,
        resolution,
        outcome.disable_after_failures,
        outcome.alert,
        now_ms,
    )


def insert_event(conn: sqlite3.Connection, event: NewEvent, now_ms: int) -> IngestResult:
    params = {**_event_params(event), "now_ms": now_ms}
    row = conn.execute(Q["insert_event"], params).fetchone()
    if row is None:
        existing = conn.execute(Q["find_event"], params).fetchone()
        return IngestResult("duplicate", int(existing[0]), 0)
    event_row_id = int(row[0])
    conn.executemany(
        Q["insert_delivery"],
        [
            {
                "event_id": event_row_id,
                "kind": d.kind.value,
                "producer_id": event.producer_id,
                "affiliate_code": d.affiliate_code,
                "destination_key": d.destination_key,
                "channel": d.channel,
                "event_name": event.event_name,
                "status": d.status.value,
                "reason": d.reason,
                "message_id": d.message_id,
                "next_attempt_at_ms": now_ms if d.status == DeliveryStatus.PENDING else None,
                "now_ms": now_ms,
            }
            for d in event.deliveries
        ],
    )
    sendable = sum(1 for d in event.deliveries if d.status == DeliveryStatus.PENDING)
    return IngestResult(event.outcome, event_row_id, sendable)


def _event_params(event: NewEvent) -> dict[str, Any]:
    return {
        "producer_id": event.producer_id,
        "hotmart_id": event.hotmart_id,
        "event_name": event.event_name,
        "source": event.source,
        "outcome": event.outcome,
        "transaction_code": event.transaction_code,
        "product_id": event.product_id,
        "payload_json": event.payload_json,
    }


def _update_health(
    conn: sqlite3.Connection,
    key: str,
    resolution: AttemptResolution,
    disable_after_failures: int,
    alert: NewEvent | None,
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
            disable_reason = (
                f"{failures} consecutive failed deliveries; last: {resolution.last_error}"
            )
    elif effect == HealthEffect.GONE:
        disable_reason = f"receiver answered 410 Gone: {resolution.last_error}"
    if not disable_reason:
        return HealthChange(disabled_now=False, consecutive_failures=failures)
    disabled = conn.execute(Q["disable_destination"], {**params, "reason": disable_reason})
    disabled_now = disabled.rowcount == 1
    if disabled_now and alert is not None:
        insert_event(conn, alert, now_ms)
    return HealthChange(disabled_now=disabled_now, consecutive_failures=failures)


def _attempt_params(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "delivery_id": attempt.delivery_id,
        "attempt_no": attempt.attempt_no,
        "started_at_ms": attempt.started_at_ms,
        "latency_ms": attempt.latency_ms,
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "response_excerpt": attempt.response_excerpt,
        "response_headers": json.dumps(attempt.response_headers),
        "request_payload": attempt.request_payload,
        "detail": attempt.detail,
    }


def claimed_delivery(row: tuple[Any, ...]) -> ClaimedDelivery:
    return ClaimedDelivery(
        id=row[0],
        kind=DeliveryKind(row[1]),
        producer_id=row[2],
        affiliate_code=row[3],
        destination_key=row[4],
        channel=row[5],
        event_name=row[6],
        message_id=row[7],
        attempts=row[8],
        replayed_after=row[9],
        payload_json=row[10],
    )
