"""Writers in several processes queue on the relay's write lock, not on SQLite's busy handler.

Each writer here gives SQLite no busy wait at all (`busy_timeout_ms=0`): without the
write lock, two processes committing at once get SQLITE_BUSY at their first collision.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from relay.store.sqlite import open_sqlite_store
from relay.store.sqlite_connection import write_lock_path

EVENTS_PER_WRITER = 400
WRITERS = 2

# One writer process: ingest events concurrently (so batches group-commit) and write the
# probe row between them; print how many writes the store refused.
WRITER = """
import asyncio, sys
from pathlib import Path
from relay.store import StoreUnavailable
from relay.store.sqlite import open_sqlite_store
from tests.test_store import new_event

async def main(db: Path, name: str, n: int) -> None:
    refused = 0
    async with open_sqlite_store(db, busy_timeout_ms=0) as store:
        async def one(i: int) -> None:
            nonlocal refused
            try:
                await store.ingest(new_event(f"{name}-{i}"), now_ms=i)
                await store.probe_write(i)
            except StoreUnavailable:
                refused += 1
        for start in range(0, n, 20):
            await asyncio.gather(*(one(i) for i in range(start, min(start + 20, n))))
    print(refused)

asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""


async def test_two_processes_hammering_writes_never_meet_busy_and_lose_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(db):
        pass  # migrated once, before the writers race
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), f"w{n}", str(EVENTS_PER_WRITER)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for n in range(WRITERS)
    ]
    refused = []
    for writer in writers:
        out, err = writer.communicate(timeout=50)
        assert writer.returncode == 0, err
        refused.append(int(out))
    assert refused == [0] * WRITERS
    with sqlite3.connect(db) as conn:
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    assert events == EVENTS_PER_WRITER * WRITERS
    assert write_lock_path(db).exists()


async def test_two_stores_in_one_process_take_turns(tmp_path: Path) -> None:
    """The lock is per open store, not per process: a CLI's second store waits too."""
    db = tmp_path / "relay.sqlite3"
    async with (
        open_sqlite_store(db, busy_timeout_ms=0) as first,
        open_sqlite_store(db, busy_timeout_ms=0) as second,
    ):
        for i in range(50):
            await first.probe_write(i)
            await second.probe_write(i)
    assert (db.stat().st_mode & 0o777) == 0o600
    assert (write_lock_path(db).stat().st_mode & 0o777) == 0o600
