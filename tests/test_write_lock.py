"""Writers in several processes queue on the relay's write lock, not on SQLite's busy handler.

Each writer process here turns SQLite's busy handler off (every `PRAGMA busy_timeout`
the store sets becomes 0) while keeping the store's 5 s deadline: without the write
lock, two processes committing at once get SQLITE_BUSY at their first collision.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from relay.store import StoreUnavailable, write_lock
from relay.store.sqlite import open_sqlite_store
from relay.store.write_lock import write_lock_path
from tests.test_store import new_event

EVENTS_PER_WRITER = 400
WRITERS = 2

# One writer process: ingest events concurrently (so batches group-commit) and write the
# probe row between them; print how many writes the store refused.
WRITER = """
import asyncio, sys
from pathlib import Path
from relay.store import StoreUnavailable
from relay.store import StoreUnavailable
from relay.store import sqlite_connection
from relay.store.sqlite import open_sqlite_store
from tests.test_store import new_event

sqlite_connection.C = {**sqlite_connection.C, "busy_timeout": "PRAGMA busy_timeout = 0"}

async def main(db: Path, name: str, n: int) -> None:
    refused = 0
    async with open_sqlite_store(db, busy_timeout_ms=5000) as store:
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
    # closing(): a sqlite3 connection's own `with` commits but never closes (3.13 warns).
    with closing(sqlite3.connect(db)) as conn:
        (events,) = conn.execute("SELECT count(*) FROM events").fetchone()
    assert events == EVENTS_PER_WRITER * WRITERS
    assert write_lock_path(db).exists()


async def test_two_stores_in_one_process_take_turns(tmp_path: Path) -> None:
    """The lock is per open store, not per process: a CLI's second store waits too."""
    db = tmp_path / "relay.sqlite3"
    async with (
        open_sqlite_store(db) as first,
        open_sqlite_store(db) as second,
    ):
        for i in range(50):
            await first.probe_write(i)
            await second.probe_write(i)
    assert (db.stat().st_mode & 0o777) == 0o600
    assert (write_lock_path(db).stat().st_mode & 0o777) == 0o600


@contextlib.contextmanager
def write_lock_held_elsewhere(db: Path) -> Iterator[None]:
    """The write lock, held on an open file of its own, as another process would."""
    holder = os.open(write_lock_path(db), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)


async def test_a_write_behind_a_held_write_lock_is_refused_as_locked_at_its_deadline(
    tmp_path: Path,
) -> None:
    """A holder that never lets go costs a 503 after busy_timeout, never a hung ingest."""
    db = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(db, busy_timeout_ms=100) as store:
        with write_lock_held_elsewhere(db):
            with pytest.raises(StoreUnavailable):
                await store.ingest(new_event("late"), now_ms=1)
            assert store.write_health().last_failure == "locked"
            with pytest.raises(StoreUnavailable):  # queued behind the abandoned wait
                await store.probe_write(2)
        # Let go: the waits given up hand the lock straight back, and writes go through.
        assert (await store.ingest(new_event("late"), now_ms=1)).status == "accepted"
        await store.probe_write(3)
    assert store.write_health().last_failure is None


async def test_a_write_waits_its_turn_while_the_holder_finishes(tmp_path: Path) -> None:
    db = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(db, busy_timeout_ms=30_000) as store:
        with write_lock_held_elsewhere(db):
            waiting = asyncio.create_task(store.ingest(new_event("patient"), now_ms=1))
            await asyncio.sleep(0.05)  # the write is queued behind the holder, not refused
            assert not waiting.done()
        assert (await waiting).status == "accepted"


async def test_a_store_closed_with_a_wait_still_abandoned_closes_cleanly(
    tmp_path: Path,
) -> None:
    db = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(db, busy_timeout_ms=0) as store:
        holder = write_lock_held_elsewhere(db)
        holder.__enter__()
        with pytest.raises(StoreUnavailable):
            await store.probe_write(1)
    holder.__exit__(None, None, None)  # the helper gets the lock and hands it back
    async with open_sqlite_store(db, busy_timeout_ms=5000) as reopened:
        await reopened.probe_write(2)


async def test_a_lock_the_kernel_refuses_fails_that_write_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "relay.sqlite3"
    real_flock = fcntl.flock
    refusals = [1]

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and refusals:  # a blocking wait, in the helper
            refusals.pop()
            raise OSError(37, "No locks available")
        real_flock(fd, operation)

    async with open_sqlite_store(db, busy_timeout_ms=5000) as store:
        with write_lock_held_elsewhere(db):
            monkeypatch.setattr(write_lock.fcntl, "flock", flock)  # fcntl's, for this test
            with pytest.raises(StoreUnavailable):
                await store.probe_write(1)
        await store.probe_write(2)  # the helper lives on
