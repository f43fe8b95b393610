"""The store fails under a running relay: full, locked, read-only. Ingest answers 503, never
200; the relay recovers by itself once the store works again; nothing accepted is lost.

The disks are real: a small tmpfs filled to the last byte, and an ext4 image that the
kernel turns read-only under the relay's open files (`errors=remount-ro` plus ext4's
`trigger_fs_error`). Root ignores file modes, so a chmod would prove nothing; and Linux
refuses `mount -o remount,ro` while the relay holds the database open for writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Figures
from tests.acceptance.harness import (
    Relay,
    Reply,
    http_request,
    relay_config,
    running,
    slip_event,
    wait_for,
)
from tests.acceptance.peer_control import Sink
from tests.conftest import SECRET

SETTLE_S = 30.0
TRIES = 5  # posts while the store is broken: every one must be refused
BUSY_TIMEOUT = "300ms"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


@contextlib.contextmanager
def mounted(kind: str, target: Path, *options: str, source: str | None = None) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", kind, "-o", ",".join(options), source or kind, str(target))
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        if _run("umount", str(target)).returncode != 0:
            _run("umount", "-l", str(target))  # busy: detach now, free when the last file closes


def store_relay(workdir: Path, db_dir: Path, sink: Sink) -> Relay:
    raw = relay_config(workdir)
    raw["storage"] = {"sqlite_path": str(db_dir / "relay.sqlite3"), "busy_timeout": BUSY_TIMEOUT}
    raw["producers"][0]["affiliates"][0]["destinations"] = [
        {"kind": "webhook", "url": sink.url(f"/hook/{workdir.name}"), "secret": SECRET}
    ]
    return Relay.from_config(raw, workdir)


def accept_and_deliver(relay: Relay, count: int) -> list[dict[str, Any]]:
    """Post `count` slips and wait until each is delivered: nothing in flight afterwards."""
    events = [slip_event() for _ in range(count)]
    for event in events:
        reply = relay.post(event)
        assert reply.status == 200, reply
    for event in events:
        wait_for(
            lambda e=event: relay.settled(e["id"], ("delivered",)),
            timeout_s=SETTLE_S,
            what="delivered",
        )
    return events


def refused_while_broken(relay: Relay, figures: Figures, fault: str) -> list[dict[str, Any]]:
    """Post while the store is broken: each a JSON 503, none a 200."""
    events = [slip_event() for _ in range(TRIES)]
    replies = [relay.post(event) for event in events]
    figures.add(f"{fault}: {len(replies)} posts -> {sorted(r.status for r in replies)}")
    for reply in replies:
        assert reply.status == 503, reply
        assert reply.headers["Content-Type"].startswith("application/json")
        assert reply.json()["error"] == "store unavailable"
    return events


def resent_until_accepted(relay: Relay, events: list[dict[str, Any]]) -> None:
    """Hotmart resends what got no 200; the relay takes it once the store works again."""
    for event in events:

        def accepted(e: dict[str, Any] = event) -> bool:
            reply: Reply = relay.post(e)
            assert reply.status in (200, 503), reply
            return reply.status == 200

        wait_for(accepted, timeout_s=SETTLE_S, what="accepted again", interval_s=0.1)


def all_delivered(
    relay: Relay, sink: Sink, events: list[dict[str, Any]], path: str
) -> dict[str, int]:
    """Every event delivered; returns how often each webhook-id arrived."""
    rows = [
        wait_for(
            lambda e=event: relay.settled(e["id"], ("delivered",)),
            timeout_s=SETTLE_S,
            what="delivered after recovery",
        )
        for event in events
    ]
    received: dict[str, int] = {}
    for hit in sink.hits(path):
        received[hit["headers"]["webhook-id"]] = received.get(hit["headers"]["webhook-id"], 0) + 1
    assert set(received) == {row["message_id"] for row in rows}
    return received


def fill(directory: Path) -> Path:
    """Write a file until the file system has not one byte left."""
    filler = directory / "filler"
    chunk = b"\0" * (64 * 1024)
    with filler.open("wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0")
    with pytest.raises(OSError, match="No space left") as caught:
        (directory / "probe").write_bytes(b"x" * 4096)
    assert caught.value.errno == errno.ENOSPC
    return filler


def checkpoint_and_truncate_wal(db_path: Path) -> None:
    """Empty the WAL, so the next commit needs new blocks (a used WAL is reused in place)."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()


def test_a_full_disk_answers_503_and_recovers_by_itself(
    tmp_path: Path, sink: Sink, figures: Figures
) -> None:
    with mounted("tmpfs", tmp_path / "disk", "size=16m", "mode=0700") as disk:
        relay = store_relay(tmp_path, disk, sink)
        with running(relay):
            before = accept_and_deliver(relay, 3)
            checkpoint_and_truncate_wal(relay.db_path)
            filler = fill(disk)
            refused = refused_while_broken(relay, figures, "full disk")
            filler.unlink()
            resent_until_accepted(relay, refused)
            received = all_delivered(relay, sink, before + refused, f"/hook/{tmp_path.name}")
            assert set(received.values()) == {1}


def test_a_store_locked_by_another_process_answers_503_and_recovers(
    tmp_path: Path, sink: Sink, figures: Figures
) -> None:
    relay = store_relay(tmp_path, tmp_path, sink)
    with running(relay):
        before = accept_and_deliver(relay, 3)
        holder = sqlite3.connect(relay.db_path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # a second writer: a backup, a CLI, a person
            refused = refused_while_broken(relay, figures, "write lock held elsewhere")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        resent_until_accepted(relay, refused)
        received = all_delivered(relay, sink, before + refused, f"/hook/{tmp_path.name}")
        assert set(received.values()) == {1}


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """The files refuse every write, even root's (the immutable attribute), until the end
    of the block. The -shm file is left alone: SQLite maps it, and a mapping that cannot
    be written kills the process rather than failing a write."""
    made = _run("chattr", "+i", *map(str, paths))
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not permitted here: {made.stderr.strip()}")
    try:
        yield
    finally:
        _run("chattr", "-i", *map(str, paths))


def test_a_store_file_made_read_only_answers_503_and_recovers_by_itself(
    tmp_path: Path, sink: Sink, figures: Figures
) -> None:
    """The database and its WAL refuse writes under the running relay (root ignores file
    modes, not the immutable attribute); once they take writes again, so does the relay,
    with no restart."""
    relay = store_relay(tmp_path, tmp_path, sink)
    with running(relay):
        before = accept_and_deliver(relay, 3)
        wal = relay.db_path.with_name(relay.db_path.name + "-wal")
        with immutable(relay.db_path, wal):
            refused = refused_while_broken(relay, figures, "read-only file")
            wait_for(
                lambda: _readiness(relay) == {"/healthz": 503, "/readyz": 503},
                timeout_s=SETTLE_S,
                what="readiness 503 while the file is read-only",
            )
        resent_until_accepted(relay, refused)
        received = all_delivered(relay, sink, before + refused, f"/hook/{tmp_path.name}")
        assert set(received.values()) == {1}
        wait_for(
            lambda: _readiness(relay) == {"/healthz": 200, "/readyz": 200},
            timeout_s=SETTLE_S,
            what="ready again by itself",
        )


@contextlib.contextmanager
def ext4_image(path: Path, mountpoint: Path) -> Iterator[tuple[Path, str]]:
    """A small ext4 file system that the kernel makes read-only at its first error."""
    with path.open("wb") as image:
        image.truncate(32 * 1024 * 1024)
    made = _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(path))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 is not available: {made.stderr.strip()}")
    with mounted("ext4", mountpoint, "loop", "errors=remount-ro", source=str(path)) as target:
        device = _run("findmnt", "-n", "-o", "SOURCE", str(target)).stdout.strip()
        yield target, os.path.basename(device)


def test_a_store_turned_read_only_answers_503_and_loses_nothing(
    tmp_path: Path, sink: Sink, figures: Figures
) -> None:
    """The kernel remounts the disk read-only under the open database (as after an I/O
    error). Repairing it takes the relay's files away, so here the relay is restarted:
    what was accepted before is delivered, what was refused is taken when resent."""
    image = tmp_path / "store.img"
    with ext4_image(image, tmp_path / "disk") as (disk, device):
        relay = store_relay(tmp_path, disk, sink)
        with running(relay):
            before = accept_and_deliver(relay, 3)
            Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("acceptance test\n")
            refused = refused_while_broken(relay, figures, "read-only disk")
            relay.terminate()
    repaired = _run("e2fsck", "-f", "-y", str(image))
    assert repaired.returncode in (0, 1), repaired.stdout  # 1: errors were corrected
    with mounted("ext4", tmp_path / "disk", "loop", source=str(image)), running(relay):
        resent_until_accepted(relay, refused)
        received = all_delivered(relay, sink, before + refused, f"/hook/{tmp_path.name}")
    # Outcomes are committed without fsync (README: a power loss may repeat an attempt),
    # and the kernel drops the unwritten pages of a disk it turned read-only: a delivery
    # made before may be made again, always under its own webhook-id.
    repeated = sorted(n for n in received.values() if n > 1)
    figures.add(f"read-only disk: {len(received)} delivered, repeated {repeated or 'none'}")
    assert all(n <= 2 for n in received.values())


# -- readiness while the store fails (SPEC §5: /readyz answers within 100 ms) -------------


READINESS = ("/healthz", "/readyz")


def _readiness(relay: Relay) -> dict[str, int]:
    return {path: http_request(relay.port, "GET", path, timeout_s=5).status for path in READINESS}


def test_readiness_says_503_while_the_disk_is_full(tmp_path: Path, sink: Sink) -> None:
    with mounted("tmpfs", tmp_path / "disk", "size=16m", "mode=0700") as disk:
        relay = store_relay(tmp_path, disk, sink)
        with running(relay):
            accept_and_deliver(relay, 1)
            checkpoint_and_truncate_wal(relay.db_path)
            filler = fill(disk)
            assert relay.post(slip_event()).status == 503
            try:
                assert _readiness(relay) == dict.fromkeys(READINESS, 503)
            finally:
                filler.unlink()
            wait_for(
                lambda: _readiness(relay) == dict.fromkeys(READINESS, 200),
                timeout_s=SETTLE_S,
                what="ready again",
            )
