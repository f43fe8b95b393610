"""`relay copy-store --to DSN`: move the configured SQLite store into an empty PostgreSQL
one, so a producer who outgrows one process keeps their history. Stop `relay serve`
first (what arrives after the copy's snapshot would not be copied), then point
storage.postgres_dsn at the target."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from relay.config import Config
from relay.store.backend import uses_postgres

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def target_dsn(value: str, environ: Mapping[str, str]) -> str | None:
    """The DSN as given, or read from the environment for `env:NAME` (the password stays
    out of the process list and the shell's history)."""
    if value.startswith("env:"):
        return environ.get(value[4:])
    return value


async def copy_store(config: Config, args: argparse.Namespace) -> int:
    if uses_postgres(config):
        print("relay copy-store: the configured store is already PostgreSQL", file=sys.stderr)
        return EXIT_USAGE
    dsn = target_dsn(args.to, args.environ)
    if not dsn:
        print(f"relay copy-store: {args.to} is not set", file=sys.stderr)
        return EXIT_USAGE
    source = config.resolve_path(config.storage.sqlite_path)
    if not source.is_file():
        print(f"relay copy-store: no store at {source}", file=sys.stderr)
        return EXIT_FAILED
    from relay.store.postgres_connection import mask_dsn, scrub_secret
    from relay.store.postgres_copy import TargetNotEmpty, copy_sqlite_to_postgres

    try:
        copied = await copy_sqlite_to_postgres(source, dsn)
    except TargetNotEmpty as exc:
        print(f"relay copy-store: refused: {exc}; copy only into an empty store", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the database's words, never the password
        reason = scrub_secret(f"{type(exc).__name__}: {exc}", dsn)
        print(f"relay copy-store: failed, nothing copied: {reason}", file=sys.stderr)
        return EXIT_FAILED
    print(f"copied to {mask_dsn(dsn)}: {copied.summary()}")
    return EXIT_OK
