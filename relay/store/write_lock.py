"""The lock every relay process takes around a write to one SQLite file: a kernel flock.

Writers in several processes (`relay serve`'s ingest and dispatcher processes, a CLI
replay) queue here instead of in SQLite's busy handler, which sleeps and retries
(issue 10 measured ingest at 641 req/s and a p99 of 1.15 s that way): a writer blocked
in flock is woken by the kernel the moment the holder lets go. Uncontended, taking and
releasing it costs about 1 µs.

A wait still ends at its caller's deadline (issue 6: no write waits on another
process's lock longer than `busy_timeout`). flock has no timeout, so a contended wait
is handed to a helper thread that blocks in flock while the writer waits on an event
with the time left; a wait given up is marked abandoned, and the helper releases the
lock as soon as it gets it. The helper is a daemon thread: one stuck behind a holder
that never lets go does not hold the process open.
"""

from __future__ import annotations

import fcntl
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_lock_path(db_path: Path) -> Path:
    """The file every relay process writing `db_path` locks around a write transaction."""
    return db_path.with_name(db_path.name + ".write-lock")


class WriteLockTimeout(sqlite3.OperationalError):
    """The write lock was not ours by the caller's deadline: the store is locked."""

    sqlite_errorname = "SQLITE_BUSY"  # what readiness and failure_kind read: "locked"


class _Wait:
    def __init__(self) -> None:
        self.granted = threading.Event()  # set when settled: the lock is ours, or failed
        self.failed = False
        self.abandoned = False


class WriteLock:
    """An exclusive flock on the file beside the database, one write at a time.

    One open file per store, so two stores in one process exclude each other too. Taken
    on aiosqlite's thread, one holder at a time: a wait blocks that thread, never the
    event loop.
    """

    def __init__(self, db_path: Path) -> None:
        self._fd = os.open(write_lock_path(db_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._guard = threading.Lock()
        self._waits: queue.SimpleQueue[_Wait] = queue.SimpleQueue()
        self._pending = 0  # waits handed to the helper and not yet settled
        self._helper: threading.Thread | None = None

    @contextmanager
    def held(self, deadline: float | None = None) -> Iterator[None]:
        """Hold the lock for the block; raise WriteLockTimeout if it is not ours by
        `deadline` (time.monotonic()); None waits as long as it takes."""
        if not self._acquire(math.inf if deadline is None else deadline):
            raise WriteLockTimeout("database is locked (the relay's write lock)")
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _acquire(self, deadline: float) -> bool:
        with self._guard:
            # A helper still waiting for an abandoned turn will take the lock on this
            # same open file, where a second flock would succeed at once: queue behind it.
            direct = self._pending == 0
        if direct:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
        wait = _Wait()
        with self._guard:
            self._pending += 1
            if self._helper is None:
                self._helper = threading.Thread(
                    target=self._serve, name="relay-write-lock", daemon=True
                )
                self._helper.start()
        self._waits.put(wait)
        left_s = deadline - time.monotonic()
        if wait.granted.wait(None if math.isinf(left_s) else max(left_s, 0.0)):
            return not wait.failed
        with self._guard:
            if wait.granted.is_set():  # settled just as the wait ran out
                return not wait.failed
            wait.abandoned = True
        return False

    def _serve(self) -> None:
        """The helper: take the lock for each wait in turn, in the order they came."""
        while True:
            wait = self._waits.get()
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:  # the kernel refused (no locks left): this write fails, not all
                with self._guard:
                    self._pending -= 1
                    wait.failed = True
                    wait.granted.set()
                continue
            with self._guard:
                self._pending -= 1
                if wait.abandoned:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    continue
                wait.granted.set()

    def close(self) -> None:
        with self._guard:
            if self._pending:
                return  # the helper is blocked on this file: process exit closes it
            os.close(self._fd)
