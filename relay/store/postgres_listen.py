"""Wake-ups across instances: LISTEN on a dedicated connection, with a fallback timer.

Every write that makes rows due NOTIFYs (`PostgresStore`); each instance listens here
and wakes its dispatcher. A notification can be lost (the listening connection dropped,
or was not yet listening): so when nothing was heard for FALLBACK_WAKE_S, the dispatcher
is woken anyway, and a dropped connection is reconnected (logged, backing off). The
timer is the exception: under traffic the notifications come first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from relay.store.postgres_connection import WAKE_CHANNEL, failure_kind

log = logging.getLogger("relay.store")

# A row another instance queued is claimed within this, even if its NOTIFY was lost.
FALLBACK_WAKE_S = 5.0
RECONNECT_MIN_S = 0.5
# How an operator (and a test) tells this connection in pg_stat_activity.
LISTEN_NAME = "relay listen"
RECONNECT_MAX_S = 10.0


async def listen_for_work(
    dsn: str,
    wake: Callable[[], None],
    *,
    server_settings: dict[str, str] | None = None,
    fallback_s: float = FALLBACK_WAKE_S,
) -> None:
    """Call `wake` on every notification, and after `fallback_s` of silence; until
    cancelled. Never raises for a lost connection: it reconnects."""
    backoff_s = RECONNECT_MIN_S
    while True:
        try:
            settings = {**(server_settings or {}), "application_name": LISTEN_NAME}
            conn = await asyncpg.connect(dsn, server_settings=settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "cannot listen for work on PostgreSQL (%s); retry in %.1fs",
                failure_kind(exc),
                backoff_s,
            )
            wake()  # the dispatcher looks by itself meanwhile
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
            continue
        backoff_s = RECONNECT_MIN_S
        try:
            await _listen(conn, wake, fallback_s)
        finally:
            if not conn.is_closed():
                conn.terminate()
        log.warning("lost the PostgreSQL connection that listens for work; reconnecting")


async def _listen(conn: asyncpg.Connection, wake: Callable[[], None], fallback_s: float) -> None:
    """Until the connection is lost."""
    heard = asyncio.Event()
    lost = asyncio.Event()

    def on_notify(*_: Any) -> None:
        heard.set()
        wake()

    conn.add_termination_listener(lambda _conn: lost.set())
    await conn.add_listener(WAKE_CHANNEL, on_notify)
    wake()  # whatever was queued while we were not listening
    while not lost.is_set() and not conn.is_closed():
        heard.clear()
        try:
            await asyncio.wait_for(heard.wait(), timeout=fallback_s)
        except TimeoutError:
            wake()  # silence: a notification may have been lost
            try:
                await conn.execute("SELECT 1")  # a dead connection says so here
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return
