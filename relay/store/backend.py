"""Open the store the config names: today the embedded SQLite one.

The one place a backend is chosen, so that callers (the engine, the CLI, the
benchmarks) speak only of `relay.store.Store`; the PostgreSQL store joins here.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from relay.config import Config
from relay.destination_ids import destination_key, positional_key
from relay.store import Store
from relay.store.sqlite import open_sqlite_store


def open_store(config: Config) -> AbstractAsyncContextManager[Store]:
    """Open (creating and migrating) the store; it closes at the end of the block."""
    return open_sqlite_store(
        config.resolve_path(config.storage.sqlite_path),
        busy_timeout_ms=int(config.storage.busy_timeout_s * 1000),
        positional_keys=positional_keys(config),
    )


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
