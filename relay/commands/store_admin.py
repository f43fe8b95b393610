"""`relay migrate`, and the checks `relay serve` makes of a PostgreSQL store first.

SQLite migrates itself whenever it is opened (one process serves it). A PostgreSQL store
is shared: its schema moves only when an operator says so, with `relay migrate` or
`relay serve --migrate`, and two instances doing it at once queue on an advisory lock.
"""

from __future__ import annotations

import argparse
import sys

from relay.config import Config
from relay.store import StoreUnavailable
from relay.store.backend import open_store, uses_postgres

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_MIGRATED = 2


async def migrate(config: Config, args: argparse.Namespace) -> int:
    try:
        async with open_store(config, migrate=True):
            pass
    except StoreUnavailable as exc:
        print(f"relay migrate: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    where = "PostgreSQL" if uses_postgres(config) else "SQLite"
    print(f"the {where} store is migrated to the newest schema")
    return EXIT_OK


async def ready_to_serve(config: Config, *, migrate: bool) -> int:
    """Before serve opens anything: a PostgreSQL store it may use as it is (migrated
    with --migrate); exit 2 with the reason if it lacks migrations, 1 if unreachable."""
    if not uses_postgres(config):
        return EXIT_OK
    from relay.store.postgres_connection import NotMigrated

    try:
        async with open_store(config, migrate=migrate):
            pass
    except NotMigrated as exc:
        print(f"relay: cannot serve: {exc}", file=sys.stderr)
        return EXIT_NOT_MIGRATED
    except StoreUnavailable as exc:
        print(f"relay: cannot serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
