"""The two kinds of child of a multi-process `relay serve`, as the serving parent spawns
them (relay.worker_pool): an ingest process and a dispatcher process.

Each is started with the `spawn` method, so it is a fresh interpreter that receives,
pickled, the config the parent validated (never re-reading a file that may have been
edited since) and its share of what the parent holds: the listening socket, the wake-up
sockets, the dispatcher board. Each stops, draining, on SIGTERM or SIGINT, and also when
the parent dies, so a parent killed with SIGKILL leaves no orphan serving the store.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from relay.app import DispatchElsewhere, init_app
from relay.config import Config
from relay.cross_process import (
    DispatcherBoard,
    RemoteDispatchers,
    WakeSender,
    wake_listener,
)
from relay.engine import open_relay, running
from relay.event_loop import run_on_chosen_loop
from relay.http_server import serve_until_stopped
from relay.logs import LogFormat, install
from relay.metrics_peers import answering
from relay.records import dispatcher_lease_owner

log = logging.getLogger("relay.workers")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class Logging:
    """The parent's log settings, so every child's lines look like its own."""

    log_format: LogFormat
    log_level: str


@dataclass(frozen=True)
class IngestChild:
    config: Config
    logging: Logging
    listening: socket.socket
    wake_senders: list[socket.socket]
    board: DispatcherBoard
    metrics_address: str  # where this process answers for its counts
    peer_addresses: tuple[str, ...]  # where every other child does


@dataclass(frozen=True)
class DispatcherChild:
    config: Config
    logging: Logging
    slot: int
    wake_receiver: socket.socket
    board: DispatcherBoard
    metrics_address: str


def ingest_main(child: IngestChild) -> None:
    """An ingest process: HTTP on the shared socket until SIGTERM; no dispatcher here."""
    install(child.logging.log_format, child.logging.log_level)
    run_on_chosen_loop(serve_ingest(child), child.config.server.event_loop, "ingest")


async def serve_ingest(child: IngestChild) -> None:
    """Serve HTTP on the parent's socket until SIGTERM or SIGINT (serve_until_stopped)."""
    elsewhere = DispatchElsewhere(
        wake=WakeSender(child.wake_senders).notify,
        dispatchers=RemoteDispatchers(child.board),
        metrics_address=child.metrics_address,
        peer_addresses=child.peer_addresses,
    )
    app = init_app(child.config, elsewhere=elsewhere)
    with stop_when_parent_dies(lambda: signal.raise_signal(signal.SIGTERM)):
        await serve_until_stopped(
            app,
            child.config.server,
            shutdown_timeout_s=child.config.delivery.shutdown_grace_s,
            sock=child.listening,
        )


def dispatcher_main(child: DispatcherChild) -> None:
    """A dispatcher process: claims and attempts until SIGTERM, then drains."""
    install(child.logging.log_format, child.logging.log_level)
    run_on_chosen_loop(
        _until_a_stop_signal(lambda stop: dispatch_until(child, stop)),
        child.config.server.event_loop,
        f"dispatcher {child.slot}",
    )


async def _until_a_stop_signal(body: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    await body(stop)


async def dispatch_until(child: DispatcherChild, stop: asyncio.Event) -> None:
    """Dispatch until `stop` is set (or the parent dies), then drain attempts in flight."""
    # Purging is one process's job: slot 0's, which is always there.
    async with (
        open_relay(child.config, owner=dispatcher_lease_owner(child.slot)) as relay,
        running(
            relay,
            daily_purge=child.slot == 0,
            on_dispatcher_state=child.board.reporter(child.slot),
        ),
        answering(child.metrics_address, relay.metrics.snapshot),
    ):
        with wake_listener(child.wake_receiver, relay.wake_dispatcher):
            with stop_when_parent_dies(stop.set):
                log.info("dispatcher process %d running", child.slot)
                await stop.wait()
            log.info("dispatcher process %d stopping: finishing attempts in flight", child.slot)
    child.board.mark(child.slot, running=False)


@contextmanager
def stop_when_parent_dies(stop: Callable[[], None]) -> Iterator[None]:
    """The parent's sentinel becomes readable when it exits: then stop as on SIGTERM."""
    parent = multiprocessing.parent_process()
    if parent is None:  # run directly, as a test may: nobody to outlive
        yield
        return
    loop = asyncio.get_running_loop()
    fd = parent.sentinel

    def parent_gone() -> None:
        loop.remove_reader(fd)
        log.error("the serving parent is gone: stopping")
        stop()

    loop.add_reader(fd, parent_gone)
    try:
        yield
    finally:
        loop.remove_reader(fd)
