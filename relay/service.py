"""`relay serve`: take Hotmart's posts and deliver, until a signal.

One process (`delivery.workers = 0`) runs ingest and the dispatcher together, as on the
smallest machines; otherwise a serving parent runs `server.workers` ingest processes and
`delivery.workers` dispatcher processes (relay.worker_pool), so that ingest and
delivery do not share one interpreter's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from relay.app import init_app
from relay.config import Config
from relay.event_loop import run_on_chosen_loop
from relay.http_server import serve_until_stopped
from relay.instance import single_instance
from relay.store.backend import open_store, uses_postgres
from relay.worker_children import Logging
from relay.worker_pool import WorkerPool, bind

DEFAULT_LOGGING = Logging("text", "info")


def serve(config: Config, logs: Logging = DEFAULT_LOGGING) -> None:
    """Run HTTP ingest and the dispatcher until SIGTERM/SIGINT; then drain and return.

    SQLite: the lock is taken before anything opens: a second serve on one database
    would hand back the first one's leases. PostgreSQL takes no such lock: instances
    share the store, each leasing as its own owner (relay.store.postgres). `logs`: how
    the children of a multi-process serve log.
    """
    lock = (
        contextlib.nullcontext()
        if uses_postgres(config)
        else single_instance(config.resolve_path(config.storage.sqlite_path))
    )
    if config.single_process:
        app = init_app(config, wake_on_signal=True)
        with lock:
            run_on_chosen_loop(
                serve_until_stopped(
                    app, config.server, shutdown_timeout_s=config.delivery.shutdown_grace_s
                ),
                config.server.event_loop,
                "serve",
            )
        return
    with lock:
        listening = bind(config.server)
        try:
            # The parent only supervises: asyncio's own loop; the children choose theirs.
            asyncio.run(_serve_with_workers(config, logs, listening))
        finally:
            listening.close()


async def _serve_with_workers(config: Config, logs: Logging, listening: socket.socket) -> None:
    # Migrate once, here, before any child opens the store.
    async with open_store(config):
        pass
    await WorkerPool(config, logs).run(listening)
