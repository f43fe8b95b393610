"""One serving relay per store: the lock file `relay serve` holds, and the wake-up signal.

SQLite leases assume one serving process per database, so `relay serve` holds an
exclusive lock on a file beside it, with its pid inside. A CLI command that queued
rows in another process wakes that server with SIGUSR1 (`wake_server`), so the server
never has to poll.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

WAKE_SIGNAL = signal.SIGUSR1


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextlib.contextmanager
def single_instance(db_path: Path) -> Iterator[None]:
    """SQLite leases assume one serving process per database; refuse a second one.

    The lock file holds the server's pid, for `wake_server`.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another relay is already serving {db_path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def wake_server(db_path: Path) -> bool:
    """Tell the relay serving `db_path`, if any, to look at its due times again.

    The pid is trusted only while its lock is held, so a stale file never sends a
    signal to some unrelated process that reused the pid.
    """
    try:
        fd = os.open(_lock_path(db_path), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid_text = os.read(fd, 32).decode(errors="replace").strip()
            if pid_text.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid_text), WAKE_SIGNAL)
                    return True
            return False
        return False  # nobody holds the lock: no server is running
    finally:
        os.close(fd)
