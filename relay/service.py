"""Open everything a running relay needs, in one place, and close it in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from relay.app import make_app
from relay.attempt import AttemptRunner, Channels
from relay.attempt_outcome import AttemptBounds, attempt_bounds
from relay.channels.email import open_email_channel
from relay.channels.webhook import open_webhook_channel
from relay.config import Config
from relay.dispatch import Dispatcher
from relay.readiness import PROBE_INTERVAL_S, Readiness, probe_writes
from relay.retention import (
    PURGE_FIRST_DELAY_S,
    PURGE_INTERVAL_S,
    SERVE_ERASE_WAIT_MS,
    purge,
    run_daily,
)
from relay.runtime import Clock, Runtime, SystemClock
from relay.store.records import SERVE_LEASE_OWNER
from relay.store.sqlite import SqliteStore, open_sqlite_store
from relay.supervisor import Supervisor, supervised
from relay.targets import TemplateSet

log = logging.getLogger("relay.service")
WAKE_SIGNAL = signal.SIGUSR1


@dataclass
class Service:
    runtime: Runtime
    dispatcher: Dispatcher
    store: SqliteStore


def bounds_of(config: Config) -> AttemptBounds:
    return attempt_bounds(config.delivery, config.storage.busy_timeout_s)


@asynccontextmanager
async def open_service(
    config: Config,
    *,
    clock: Clock | None = None,
    owner: str = SERVE_LEASE_OWNER,
    bounds: AttemptBounds | None = None,
) -> AsyncIterator[Service]:
    """Store, channels, templates and a dispatcher (not yet running) whose leases `owner`
    holds: "serve", or a CLI's own name when it sends with no server running."""
    clock = clock or SystemClock()
    async with open_store(config) as store:
        runtime = Runtime(config=config, store=store, readiness=Readiness(store), clock=clock)
        async with open_engine(
            config, store, clock=clock, wakeup=runtime.wakeup, owner=owner, bounds=bounds
        ) as dispatcher:
            yield Service(runtime=runtime, dispatcher=dispatcher, store=store)


@asynccontextmanager
async def open_engine(
    config: Config,
    store: SqliteStore,
    *,
    clock: Clock,
    wakeup: asyncio.Event,
    owner: str,
    bounds: AttemptBounds | None = None,
) -> AsyncIterator[Dispatcher]:
    """Channels, templates and the attempt runner over an open store, and a dispatcher.

    `bounds` defaults to those the config implies (`bounds_of`)."""
    templates = TemplateSet(config)  # one Jinja environment per override folder
    bounds = bounds or bounds_of(config)
    async with (
        open_email_channel(
            config.email, base_dir=config.base_dir, timeout_s=config.delivery.timeout_s
        ) as email,
        open_webhook_channel(
            timeout_s=config.delivery.timeout_s,
            concurrency=config.delivery.concurrency,
            allow_private_networks=config.delivery.allow_private_networks,
        ) as webhook,
    ):
        channels = Channels(email, webhook)
        runner = AttemptRunner(config, store, channels, templates, clock, budget_s=bounds.budget_s)
        yield Dispatcher(
            store, runner, config.delivery, clock, wakeup, lease_s=bounds.lease_s, owner=owner
        )


def open_store(config: Config) -> AbstractAsyncContextManager[SqliteStore]:
    return open_sqlite_store(
        config.resolve_path(config.storage.sqlite_path),
        busy_timeout_ms=int(config.storage.busy_timeout_s * 1000),
    )


@asynccontextmanager
async def running_service(
    config: Config,
    *,
    clock: Clock | None = None,
    wake_on_signal: bool = False,
    probe_interval_s: float = PROBE_INTERVAL_S,
    purge_first_delay_s: float = PURGE_FIRST_DELAY_S,
    purge_interval_s: float = PURGE_INTERVAL_S,
) -> AsyncIterator[Runtime]:
    """`open_service` with its dispatcher, write probe and daily purge running, each
    supervised; stopping drains attempts in flight.

    With `wake_on_signal`, SIGUSR1 wakes the dispatcher: how a CLI replay in another
    process tells the server that due times changed, so the server never has to poll.
    """
    async with open_service(config, clock=clock) as service:
        runtime = service.runtime
        dispatcher = Supervisor("dispatcher", service.dispatcher.run)
        probe = Supervisor(
            "write probe",
            lambda: probe_writes(service.store, runtime.clock.now_ms, probe_interval_s),
        )
        retention_s = config.storage.retention_s
        purger = Supervisor(
            "purge",
            lambda: run_daily(
                lambda: purge(
                    service.store,
                    runtime.clock.now_ms(),
                    retention_s,
                    erase_wait_ms=SERVE_ERASE_WAIT_MS,
                ),
                first_delay_s=purge_first_delay_s,
                interval_s=purge_interval_s,
            ),
        )
        runtime.readiness.dispatcher = dispatcher
        async with supervised(dispatcher), supervised(probe), supervised(purger):
            loop = asyncio.get_running_loop()
            if wake_on_signal:
                loop.add_signal_handler(WAKE_SIGNAL, runtime.wake_dispatcher)
            try:
                yield runtime
            finally:
                if wake_on_signal:
                    loop.remove_signal_handler(WAKE_SIGNAL)
                runtime.readiness.draining = True
                await service.dispatcher.drain(config.delivery.shutdown_grace_s)


def _lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


@contextlib.contextmanager
def single_instance(db_path: Path) -> Iterator[None]:
    """SQLite leases assume one serving process per database; refuse a second one.

    The lock file holds the server's pid, for `wake_server`.
    """
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(db_path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another relay is already serving {db_path}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def wake_server(db_path: Path) -> bool:
    """Tell the relay serving `db_path`, if any, to look at its due times again.

    The pid is trusted only while its lock is held, so a stale file never sends a
    signal to some unrelated process that reused the pid.
    """
    try:
        fd = os.open(_lock_path(db_path), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid_text = os.read(fd, 32).decode(errors="replace").strip()
            if pid_text.isdigit():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid_text), WAKE_SIGNAL)
                    return True
            return False
        return False  # nobody holds the lock: no server is running
    finally:
        os.close(fd)


def serve(config: Config) -> None:
    """Run HTTP ingest and the dispatcher until SIGTERM/SIGINT; then drain and return."""
    from relay.http_server import serve_until_stopped

    app = make_app(
        lambda: running_service(config, wake_on_signal=True),
        max_body_bytes=config.server.max_body_bytes,
        ingest_path=config.server.path,
    )
    with single_instance(config.resolve_path(config.storage.sqlite_path)):
        asyncio.run(
            serve_until_stopped(
                app, config.server, shutdown_timeout_s=config.delivery.shutdown_grace_s
            )
        )
