"""The statements of destination rekeys and late grants, run in one SQLite transaction.

Like `sqlite_statements`, plain synchronous functions that `SqliteStore` runs on
aiosqlite's thread, every statement of one operation in one hop.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from relay.records import (
    DeliveryStatus,
    Regrant,
    RegrantResult,
    Replacement,
    WithheldRow,
)
from relay.store.rows import redecided_params, regrant_params, superseded_reason
from relay.store.sqlite_statements import Q, from_row, named_rows, queue_destinations

REKEY_STEP = "destination ids"
log = logging.getLogger("relay.store")


@dataclass(frozen=True)
class Rekeyed:
    """What the one-time rekey moved, and the positional keys no destination answers to."""

    deliveries: int
    destinations: int
    unmapped: list[str]

    def log(self) -> None:
        if self.deliveries or self.destinations:  # a new store has nothing to say
            log.info(
                "destination keys: %d deliveries and %d destination records moved from "
                "positions to ids",
                self.deliveries,
                self.destinations,
            )
        if self.unmapped:
            log.warning(
                "destination keys not in the config, left as they were (their pending "
                "deliveries fail as 'no longer in the config'): %s",
                ", ".join(self.unmapped),
            )


def rekey_positional(
    conn: sqlite3.Connection, new_by_old: Mapping[str, str], now_ms: int
) -> Rekeyed | None:
    """Move positional keys to id keys, once per store; None if it already ran."""
    if conn.execute(Q["step_done"], {"name": REKEY_STEP}).fetchone():
        return None
    moved_rows = moved_health = 0
    for old, new in new_by_old.items():
        params = {"old": old, "new": new}
        moved_rows += conn.execute(Q["rekey_deliveries"], params).rowcount
        conn.execute(Q["rekey_alerts"], params)
        moved_health += conn.execute(Q["rekey_destinations"], params).rowcount
    # An id starts with a letter, so a key that ends in digits is one this config could
    # not place: its destination was gone before the upgrade.
    unmapped = sorted(
        key for (key,) in conn.execute(Q["stored_keys"]) if key.rpartition("/")[2].isdigit()
    )
    detail = f"{moved_rows} deliveries and {moved_health} destinations moved to id keys"
    if unmapped:
        detail += f"; not in the config, left as they were: {', '.join(unmapped)}"
    conn.execute(Q["mark_step_done"], {"name": REKEY_STEP, "now_ms": now_ms, "detail": detail})
    return Rekeyed(moved_rows, moved_health, unmapped)


def withheld_rows(conn: sqlite3.Connection, params: Mapping[str, object]) -> list[WithheldRow]:
    return [
        from_row(WithheldRow, row, event_keys=frozenset(json.loads(row["event_keys"])))
        for row in named_rows(conn, "withheld_rows", params)
    ]


def regrant(
    conn: sqlite3.Connection,
    regrants: Sequence[Regrant],
    replacements: Sequence[Replacement],
    now_ms: int,
) -> RegrantResult:
    """Apply decisions made again; a row no longer withheld (another replay took it
    meanwhile) is left as it is."""
    result = RegrantResult()
    for change in regrants:
        if conn.execute(Q["regrant"], regrant_params(change, now_ms)).fetchone() is None:
            continue
        if change.status == DeliveryStatus.PENDING:
            result.pending.append(change.delivery_id)
        else:
            result.withheld.append((change.delivery_id, change.reason))
    for replacement in replacements:
        _replace(conn, replacement, now_ms, result)
    return result


def _replace(
    conn: sqlite3.Connection, replacement: Replacement, now_ms: int, result: RegrantResult
) -> None:
    ids = json.dumps(list(replacement.delivery_ids))
    still = [row[0] for row in conn.execute(Q["still_withheld"], {"ids": ids})]
    if not still:
        return
    created: list[tuple[int, DeliveryStatus]] = []
    for new in replacement.deliveries:
        params = redecided_params(replacement, new, now_ms)
        row = conn.execute(Q["insert_redecided"], params).fetchone()
        if row is not None:
            created.append((row[0], new.status))
            if new.status == DeliveryStatus.PENDING:
                queue_destinations(conn, [(new.destination_key, now_ms)])
    if not created:
        return
    reason = superseded_reason(created)
    for old_id in still:
        conn.execute(Q["supersede"], {"id": old_id, "reason": reason, "now_ms": now_ms})
        result.replaced.append((old_id, [new_id for new_id, _ in created]))
    result.pending.extend(new_id for new_id, status in created if status == DeliveryStatus.PENDING)
