"""The statements one PostgreSQL transaction runs, as async functions on one connection.

Twins of `sqlite_statements`: the same steps in the same order, so both backends keep
the same guarantees; what differs is that each await is a round trip, and that row locks
(not one writer at a time) keep concurrent instances right.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from relay.hotmart import SETTLING_EVENTS, reminder_cancel_reason
from relay.records import (
    ClaimedDelivery,
    HealthChange,
    HealthEffect,
    IngestResult,
    NewDelivery,
    NewEvent,
    Notice,
    UnreadableRow,
)
from relay.store.postgres_connection import SQL_DIR, load_statements, row_count, run
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
from relay.store.sqlite_statements import claimed_delivery

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
        [statement.args(delivery_params(event_row_id, event, d, now_ms)) for d in deliveries],
    )
    return IngestResult(event.outcome, int(event_row_id), sendable(deliveries))


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
            found = reminders_cancelled(found, reminder_cancel_reason(settled))
    return found


async def record_outcome(conn: asyncpg.Connection, outcome: Outcome, now_ms: int) -> HealthChange:
    """Record one attempt, only if the row still holds the writer's lease (the fence)."""
    moved = await execute(conn, "resolve_delivery", resolve_params(outcome, now_ms))
    if moved == 0:  # the lease ran out and another claim took the row: not ours
        return HealthChange(disabled_now=False, consecutive_failures=0, recorded=False)
    await execute(conn, "insert_attempt", attempt_params(outcome.attempt))
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
            disable_reason = failures_disable_reason(failures, resolution.last_error)
    else:
        await execute(conn, "destination_error", params)
        if effect == HealthEffect.GONE:
            disable_reason = gone_disable_reason(resolution.last_error)
    if not disable_reason:
        return HealthChange(disabled_now=False, consecutive_failures=failures)
    disabled_now = await execute(conn, "disable_destination", {**params, "reason": disable_reason})
    if disabled_now and outcome.alert is not None:
        await insert_event(conn, alert_event(outcome.alert), now_ms)
    return HealthChange(disabled_now=bool(disabled_now), consecutive_failures=failures)


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
