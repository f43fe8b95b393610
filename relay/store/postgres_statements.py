"""The statements one PostgreSQL transaction runs, as async functions on one connection.

Twins of `sqlite_statements`: the same steps in the same order, so both backends keep
the same guarantees; what differs is that each await is a round trip, and that row locks
(not one writer at a time) keep concurrent instances right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from relay.hotmart import SETTLING_EVENTS, reminder_cancel_reason
from relay.records import (
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
from relay.store.postgres_connection import SQL_DIR, load_statements, row_count, run
from relay.store.sqlite_statements import ALERT_SOURCE, Outcome, claimed_delivery

# The named statements of sql/postgres/queries.sql, read once at import.
P = load_statements(SQL_DIR / "queries.sql")
SETTLING = sorted(SETTLING_EVENTS)


async def rows(
    conn: asyncpg.Connection, name: str, params: Mapping[str, Any] | None = None
) -> list[asyncpg.Record]:
    statement = P[name]
    return list(await conn.fetch(statement.sql, *statement.args(params or {})))


async def value(conn: asyncpg.Connection, name: str, params: Mapping[str, Any]) -> Any:
    statement = P[name]
    return await conn.fetchval(statement.sql, *statement.args(params))


async def execute(conn: asyncpg.Connection, name: str, params: Mapping[str, Any]) -> int:
    """Run a named write; how many rows it changed."""
    return row_count(await run(conn, P[name], params))


async def insert_event(conn: asyncpg.Connection, event: NewEvent, now_ms: int) -> IngestResult:
    params = {**event_params(event), "now_ms": now_ms}
    event_row_id = await value(conn, "insert_event", params)
    if event_row_id is None:
        existing = await value(conn, "find_event", params)
        return IngestResult("duplicate", int(existing), 0)
    deliveries = await _settle_reminders(conn, event, now_ms)
    statement = P["insert_delivery"]
    await conn.executemany(
        statement.sql,
        [
            statement.args(
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
                    "next_attempt_at_ms": (d.due_at_ms or now_ms)
                    if d.status == DeliveryStatus.PENDING
                    else None,
                    "now_ms": now_ms,
                    "notification": d.notification,
                }
            )
            for d in deliveries
        ],
    )
    sendable = sum(
        1 for d in deliveries if d.status == DeliveryStatus.PENDING and d.due_at_ms is None
    )
    return IngestResult(event.outcome, int(event_row_id), sendable)


async def _settle_reminders(
    conn: asyncpg.Connection, event: NewEvent, now_ms: int
) -> list[NewDelivery]:
    """As `sqlite_statements._settle_reminders`: whichever event arrives first, a settled
    purchase has no reminder left to send."""
    found = list(event.deliveries)
    if not event.transaction_code:
        return found
    sale = {"producer_id": event.producer_id, "transaction_code": event.transaction_code}
    if event.event_name in SETTLING_EVENTS:
        reason = reminder_cancel_reason(event.event_name)
        await execute(conn, "cancel_reminders", {**sale, "reason": reason, "now_ms": now_ms})
    if any(d.notification == Notice.REMINDER for d in found):
        settled = await value(conn, "settling_event", {**sale, "settling": SETTLING})
        if settled is not None:
            reason = reminder_cancel_reason(settled)
            found = [
                replace(d, status=DeliveryStatus.CANCELLED, reason=reason, due_at_ms=None)
                if d.notification == Notice.REMINDER
                else d
                for d in found
            ]
    return found


def event_params(event: NewEvent) -> dict[str, Any]:
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


async def record_outcome(conn: asyncpg.Connection, outcome: Outcome, now_ms: int) -> HealthChange:
    """Record one attempt, only if the row still holds the writer's lease (the fence)."""
    attempt, resolution = outcome.attempt, outcome.resolution
    moved = await execute(
        conn,
        "resolve_delivery",
        {
            "delivery_id": attempt.delivery_id,
            "attempt_no": attempt.attempt_no,
            "status": resolution.status.value,
            "next_attempt_at_ms": resolution.next_attempt_at_ms,
            "last_error": resolution.last_error,
            "reason": resolution.last_error or "delivered",
            "now_ms": now_ms,
            "lease_token": outcome.lease_token,
        },
    )
    if moved == 0:  # the lease ran out and another claim took the row: not ours
        return HealthChange(disabled_now=False, consecutive_failures=0, recorded=False)
    await execute(
        conn,
        "insert_attempt",
        {
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
        },
    )
    return await _update_health(conn, outcome, now_ms)


async def _update_health(conn: asyncpg.Connection, outcome: Outcome, now_ms: int) -> HealthChange:
    """The destination's health, each change one statement under the destination row's
    lock: of two instances failing at once, one disables and stores the one alert."""
    resolution = outcome.resolution
    effect = resolution.health
    if effect == HealthEffect.NONE:
        return HealthChange(disabled_now=False, consecutive_failures=0)
    params: dict[str, Any] = {
        "key": outcome.destination_key,
        "now_ms": now_ms,
        "error": resolution.last_error,
    }
    if effect == HealthEffect.SUCCESS:
        await execute(conn, "destination_success", params)
        return HealthChange(disabled_now=False, consecutive_failures=0)
    failures = 0
    disable_reason = ""
    if effect == HealthEffect.FAILED:
        found = (await rows(conn, "destination_failed", params))[0]
        failures = int(found["consecutive_failures"])
        if found["enabled"] and failures >= outcome.disable_after_failures:
            disable_reason = (
                f"{failures} consecutive failed deliveries; last: {resolution.last_error}"
            )
    else:
        await execute(conn, "destination_error", params)
        if effect == HealthEffect.GONE:
            disable_reason = f"receiver answered 410 Gone: {resolution.last_error}"
    if not disable_reason:
        return HealthChange(disabled_now=False, consecutive_failures=failures)
    disabled_now = await execute(conn, "disable_destination", {**params, "reason": disable_reason})
    if disabled_now and outcome.alert is not None:
        await insert_alert(conn, outcome.alert, now_ms)
    return HealthChange(disabled_now=bool(disabled_now), consecutive_failures=failures)


async def insert_alert(conn: asyncpg.Connection, alert: NewAlert, now_ms: int) -> None:
    """An alert is the relay's own event with one pending delivery of kind `alert`."""
    await insert_event(
        conn,
        NewEvent(
            producer_id=alert.producer_id,
            hotmart_id=alert.alert_id,
            event_name=alert.event_name,
            source=ALERT_SOURCE,
            transaction_code="",
            product_id="",
            payload_json=alert.payload_json,
            deliveries=(
                NewDelivery(
                    status=DeliveryStatus.PENDING,
                    reason=alert.reason,
                    message_id=alert.message_id,
                    destination_key=alert.destination_key,
                    channel=Channel.EMAIL.value,
                    kind=DeliveryKind.ALERT,
                ),
            ),
        ),
        now_ms,
    )


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def read_claimed(
    conn: asyncpg.Connection, ids: Sequence[int], now_ms: int
) -> tuple[list[ClaimedDelivery], list[UnreadableRow]]:
    """The claimed rows; any that cannot be read is failed here, so it never kills a claim."""
    deliveries, unreadable = [], []
    for record in await rows(conn, "claimed_rows", {"ids": list(ids)}):
        row = {**dict(record), "payload_is_json": _is_json(record["payload_json"])}
        try:
            read = claimed_delivery(row)
        except Exception as exc:  # whatever else is wrong with it: the type, never the data
            read = f"cannot be read: {type(exc).__name__}"
        if isinstance(read, str):
            await execute(
                conn, "fail_unreadable", {"id": row["id"], "reason": read, "now_ms": now_ms}
            )
            unreadable.append(UnreadableRow(row["id"], read))
        else:
            deliveries.append(read)
    return deliveries, unreadable
