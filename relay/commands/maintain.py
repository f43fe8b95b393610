"""`relay purge` and `relay backup PATH`: keeping the store lawful and safe.

Both work beside a running `relay serve`: a purge writes in short transactions, and a
backup reads one snapshot, which in WAL mode holds up no writer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sqlite3
import sys
import time
from pathlib import Path

from relay.config import Config
from relay.records import BackupFacts
from relay.retention import purge as purge_store
from relay.store import StoreUnavailable
from relay.store.backend import open_store, uses_postgres

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


async def purge(config: Config, args: argparse.Namespace) -> int:
    retention_s = config.storage.retention_s
    # Not the server: it may wait as long as any write does for the WAL to be let go.
    erase_wait_ms = int(config.storage.busy_timeout_s * 1000)
    try:
        async with open_store(config) as store:
            now_ms = time.time_ns() // 1_000_000
            report = await purge_store(store, now_ms, retention_s, erase_wait_ms=erase_wait_ms)
    except (StoreUnavailable, sqlite3.Error, OSError) as exc:
        print(f"relay purge: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(report.summary(retention_s))
    return EXIT_OK if report.erased else EXIT_FAILED


async def backup(config: Config, args: argparse.Namespace) -> int:
    """Copy the store to PATH: created 0600 (it holds buyer data), never half-written."""
    if uses_postgres(config):
        from relay.store.postgres_connection import POSTGRES_BACKUP

        print(f"relay backup: {POSTGRES_BACKUP}", file=sys.stderr)
        return EXIT_USAGE
    store_path = config.resolve_path(config.storage.sqlite_path)
    target = Path(args.path)
    refusal = _refusal(store_path, target, force=args.force)
    if refusal:
        print(f"relay backup: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    if not store_path.is_file():
        print(f"relay backup: failed: no store at {store_path}", file=sys.stderr)
        return EXIT_FAILED
    started = time.monotonic()
    try:
        partial = await asyncio.to_thread(_create_partial, target)
    except OSError as exc:
        print(f"relay backup: failed: cannot write beside {target}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        async with open_store(config) as store:
            facts = await store.backup(partial)
        if facts.problems:
            problem = facts.problems[0]
            print(f"relay backup: failed: the copy is not sound: {problem}", file=sys.stderr)
            return EXIT_FAILED
        await asyncio.to_thread(_publish, partial, target, args.force)
    except FileExistsError:
        print(f"relay backup: {target} appeared meanwhile; not replaced", file=sys.stderr)
        return EXIT_USAGE
    except (StoreUnavailable, sqlite3.Error, OSError) as exc:
        print(f"relay backup: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await asyncio.to_thread(_remove_leftovers, partial)
    print(_done(target, facts, time.monotonic() - started))
    return EXIT_OK


def _refusal(store_path: Path, target: Path, *, force: bool) -> str:
    """Why PATH cannot be written as asked, or ''."""
    store_files = {
        store_path.resolve().with_name(store_path.name + suffix)
        for suffix in ("", "-wal", "-shm", "-journal", ".lock")
    }
    if target.resolve() in store_files:
        return f"{target} is the store itself; name another file"
    if target.is_dir():
        return f"{target} is a directory; name the file to write, e.g. {target}/relay.sqlite3"
    if (target.exists() or target.is_symlink()) and not force:
        return f"{target} exists; give --force to replace it"
    return ""


def _create_partial(target: Path) -> Path:
    """An empty file beside PATH, readable by this user only from its first byte, that
    becomes PATH only once the copy in it is whole and checked."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return partial


def _publish(partial: Path, target: Path, force: bool) -> None:
    """Put the finished copy at PATH in one step; without --force, never over a file."""
    if force:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)  # FileExistsError if PATH appeared since the check
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: check, then rename
            if target.exists() or target.is_symlink():
                raise FileExistsError(target) from None
            os.replace(partial, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the new name survives a power loss too
    finally:
        os.close(fd)


def _remove_leftovers(partial: Path) -> None:
    for leftover in (partial, partial.with_name(partial.name + "-journal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _done(target: Path, facts: BackupFacts, took_s: float) -> str:
    return (
        f"backup written to {target}: {facts.size_bytes} bytes, {facts.events} event(s), "
        f"{facts.deliveries} deliveries, integrity ok, in {took_s:.1f}s"
    )
