"""Retention and backup on the SQLite store, as plain functions on a sqlite3 connection.

Scrubbing a row is not enough to forget it: SQLite leaves the old bytes of a rewritten
row in the free space of its page, in freed pages, and in earlier frames of the WAL.
`secure_delete` (set for every connection in `prepare`) zeroes freed space as it is
freed, and a TRUNCATE checkpoint writes the WAL back and cuts it to nothing, so after a
purge the files hold no copy of what was scrubbed (tests/test_retention.py scans them).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from relay.records import BackupFacts, ScrubbedEvent, ScrubCandidate, ScrubCounts
from relay.store.sqlite_statements import Q

# SQLite's answers to a checkpoint that met another connection's lock: not done yet.
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def scrub_candidates(
    conn: sqlite3.Connection, before_ms: int, after: tuple[int, int], limit: int
) -> list[ScrubCandidate]:
    params = {"before_ms": before_ms, "after_ms": after[0], "after_id": after[1], "limit": limit}
    return [ScrubCandidate(*row) for row in conn.execute(Q["scrub_candidates"], params)]


def scrub(conn: sqlite3.Connection, events: Sequence[ScrubbedEvent], now_ms: int) -> ScrubCounts:
    """Run inside the caller's transaction; count what was scrubbed."""
    scrubbed_events = scrubbed_attempts = 0
    for event in events:
        params = {"id": event.event_row_id, "payload_json": event.payload_json, "now_ms": now_ms}
        if conn.execute(Q["scrub_event"], params).rowcount:
            scrubbed_events += 1
            scrubbed_attempts += conn.execute(Q["scrub_attempts_of_event"], params).rowcount
    return ScrubCounts(events=scrubbed_events, attempts=scrubbed_attempts)


def truncate_wal(conn: sqlite3.Connection, wait_ms: int, *, restore_ms: int) -> bool:
    """Copy the WAL into the database and cut it to zero bytes; False if a reader or a
    writer elsewhere kept it from finishing within `wait_ms`. The connection's busy
    timeout is `restore_ms` again afterwards."""
    conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
    try:
        busy, _frames, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "").startswith(_BUSY):
            return False
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(restore_ms)}")
    return bool(busy == 0)


def open_copy(path: Path) -> sqlite3.Connection:
    """The connection a backup writes through; used from the store's own thread."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def finish_copy(path: Path) -> BackupFacts:
    """Make the copy one self-contained file, check it, count what it holds, sync it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # The copy carries the source's WAL flag; a backup is one file, with no -wal beside it.
        conn.execute("PRAGMA journal_mode = DELETE")
        try:
            found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:  # too damaged for the check to walk it
            found = [f"integrity check stopped: {exc}"]
        problems = tuple(p for p in found if p != "ok")
        events = deliveries = 0
        if not problems:
            events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            deliveries = conn.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
    finally:
        conn.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    return BackupFacts(events=events, deliveries=deliveries, size_bytes=size, problems=problems)
