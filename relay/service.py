"""`relay serve`: one process that takes Hotmart's posts and delivers, until a signal."""

from __future__ import annotations

import asyncio
import logging

from relay.app import init_app
from relay.config import Config
from relay.event_loop import choose_loop
from relay.http_server import serve_until_stopped
from relay.instance import single_instance

log = logging.getLogger("relay.serve")


def serve(config: Config) -> None:
    """Run HTTP ingest and the dispatcher until SIGTERM/SIGINT; then drain and return.

    The lock is taken before anything opens: a second serve on one database would hand
    back the first one's leases.
    """
    app = init_app(config, wake_on_signal=True)
    loop_name, loop_factory = choose_loop(config.server.event_loop)
    with (
        single_instance(config.resolve_path(config.storage.sqlite_path)),
        asyncio.Runner(loop_factory=loop_factory) as runner,
    ):
        log.info("event loop: %s", loop_name)
        runner.run(
            serve_until_stopped(
                app, config.server, shutdown_timeout_s=config.delivery.shutdown_grace_s
            )
        )
