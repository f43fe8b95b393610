"""The statements of the one-time destination rekey, run in one SQLite transaction.

Like `sqlite_statements`, plain synchronous functions that `SqliteStore` runs on
aiosqlite's thread, every statement of one operation in one hop.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from relay.store.sqlite_statements import Q

REKEY_STEP = "destination ids"


@dataclass(frozen=True)
class Rekeyed:
    """What the one-time rekey moved, and the positional keys no destination answers to."""

    deliveries: int
    destinations: int
    unmapped: list[str]


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
        moved_health += conn.execute(Q["rekey_destinations"], params).rowcount
    # An id starts with a letter, so a key that ends in digits is one this config could
    # not place: its destination was gone before the upgrade.
    unmapped = sorted(
        key
        for (key,) in conn.execute(Q["stored_keys"])
        if key.removeprefix("alert:").rpartition("/")[2].isdigit()
    )
    detail = f"{moved_rows} deliveries and {moved_health} destinations moved to id keys"
    if unmapped:
        detail += f"; not in the config, left as they were: {', '.join(unmapped)}"
    conn.execute(Q["mark_step_done"], {"name": REKEY_STEP, "now_ms": now_ms, "detail": detail})
    return Rekeyed(moved_rows, moved_health, unmapped)
