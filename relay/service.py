"""`relay serve`: one process that takes Hotmart's posts and delivers, until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from relay.app import init_app
from relay.config import Config
from relay.event_loop import choose_loop
from relay.http_server import serve_until_stopped
from relay.instance import single_instance
from relay.store.backend import uses_postgres

log = logging.getLogger("relay.serve")


def serve(config: Config) -> None:
    """Run HTTP ingest and the dispatcher until SIGTERM/SIGINT; then drain and return.

    SQLite: the lock is taken before anything opens: a second serve on one database
    would hand back the first one's leases. PostgreSQL takes no such lock: instances
    share the store, each leasing as its own owner (relay.store.postgres).
    """
    app = init_app(config, wake_on_signal=True)
    loop_name, loop_factory = choose_loop(config.server.event_loop)
    lock = (
        contextlib.nullcontext()
        if uses_postgres(config)
        else single_instance(config.resolve_path(config.storage.sqlite_path))
    )
    with lock, asyncio.Runner(loop_factory=loop_factory) as runner:
        log.info("event loop: %s", loop_name)
        runner.run(
            serve_until_stopped(
                app, config.server, shutdown_timeout_s=config.delivery.shutdown_grace_s
            )
        )
