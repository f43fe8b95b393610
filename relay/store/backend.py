"""Open the store the config names: embedded SQLite, or PostgreSQL shared by instances.

The one place a backend is chosen, so that callers (the engine, the CLI, the
benchmarks) speak only of `relay.store.Store`. The PostgreSQL store is imported only
when configured: asyncpg is the optional extra `relay[postgres]`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from relay.config import Config
from relay.destination_ids import destination_key, positional_key
from relay.store import Store, StoreUnavailable
from relay.store.sqlite import open_sqlite_store


def uses_postgres(config: Config) -> bool:
    return config.storage.postgres_dsn is not None


def open_store(config: Config, *, migrate: bool = False) -> AbstractAsyncContextManager[Store]:
    """Open the store; it closes at the end of the block. SQLite creates and migrates
    itself; PostgreSQL is migrated only when asked (`relay migrate`, `serve --migrate`),
    and refuses to open otherwise while migrations are missing."""
    if uses_postgres(config):
        return _open_postgres(config, migrate=migrate)
    return open_sqlite_store(
        config.resolve_path(config.storage.sqlite_path),
        busy_timeout_ms=int(config.storage.busy_timeout_s * 1000),
        positional_keys=positional_keys(config),
    )


def instance_name(config: Config) -> str:
    """The lease owner a serve on PostgreSQL leases as: its host and port, which no
    other live relay can hold at once, so a restarted instance takes back its own."""
    return f"serve:{socket.gethostname()}:{config.server.port}"


@asynccontextmanager
async def _open_postgres(config: Config, *, migrate: bool) -> AsyncIterator[Store]:
    try:
        from relay.store.postgres import open_postgres_store
    except ImportError:  # pragma: no cover - the extra is part of [test]
        raise StoreUnavailable(
            "storage.postgres_dsn is set but asyncpg is not installed: "
            "pip install 'relay[postgres]'"
        ) from None
    dsn = config.storage.postgres_dsn
    assert dsn is not None
    async with open_postgres_store(
        dsn.get_secret_value(),
        acquire_timeout_s=config.storage.busy_timeout_s,
        instance=instance_name(config),
        migrate_first=migrate,
    ) as store:
        yield store


def positional_keys(config: Config) -> dict[str, str]:
    """Each destination's key as an older relay wrote it (its position) -> its id key.

    What the store's one-time rekey moves. Right only for the config in force when the
    store is first opened after the upgrade; one reordered before that maps positions
    to the wrong destinations.
    """
    return {
        positional_key(producer.id, affiliate.code, index): destination_key(
            producer.id, affiliate.code, destination.stable_id
        )
        for producer in config.producers
        for affiliate in producer.affiliates
        for index, destination in enumerate(affiliate.destinations)
    }
