"""One running relay, opened in one place: `open_relay` builds it, `running` runs it.

`Relay` is what the HTTP handlers, the CLI's operations and the tests hold: the config,
the store, the dispatcher and what readiness reports. `relay.app.init_app` opens one
for the life of the web app; a CLI command that sends with no server running opens
one over the store it already has, with leases of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from relay.attempt import AttemptRunner
from relay.attempt_outcome import AttemptBounds, attempt_bounds
from relay.channels.router import open_channels
from relay.clock import Clock, Sleeper, SystemClock, wait_for_event
from relay.config import Config
from relay.dispatch import Dispatcher
from relay.instance import WAKE_SIGNAL
from relay.metrics import Metrics, attempt_buckets_s
from relay.readiness import PROBE_INTERVAL_S, Readiness, probe_writes
from relay.records import SERVE_LEASE_OWNER
from relay.retention import (
    PURGE_FIRST_DELAY_S,
    PURGE_INTERVAL_S,
    SERVE_ERASE_WAIT_MS,
    purge,
    run_daily,
)
from relay.store import Store
from relay.store.backend import open_store
from relay.supervisor import Supervisor, TaskState, supervised
from relay.targets import TemplateSet


@dataclass
class Relay:
    config: Config
    store: Store
    dispatcher: Dispatcher
    readiness: Readiness
    clock: Clock
    metrics: Metrics
    # Set when something is due (a commit in ingest, a finished attempt); the dispatcher
    # waits on it.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set in an ingest process of a multi-process serve: wakes the dispatcher processes.
    wake_elsewhere: Callable[[], None] | None = None
    # Set there too: the other processes' metric snapshots, and how many did not answer.
    peer_metrics: Callable[[], Awaitable[tuple[list[bytes], int]]] | None = None

    def wake_dispatcher(self) -> None:
        self.wakeup.set()
        if self.wake_elsewhere is not None:
            self.wake_elsewhere()


def bounds_of(config: Config) -> AttemptBounds:
    return attempt_bounds(config.delivery, config.storage.busy_timeout_s)


@asynccontextmanager
async def open_relay(
    config: Config,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    sleeper: Sleeper = wait_for_event,
    owner: str = SERVE_LEASE_OWNER,
    bounds: AttemptBounds | None = None,
) -> AsyncIterator[Relay]:
    """The store (opened here unless `store` is given, which the caller keeps), the
    channels, the templates and a dispatcher, not yet running, whose leases `owner`
    holds: "serve", or a CLI's own name when it sends with no server running.

    `bounds` defaults to those the config implies (`bounds_of`).
    """
    clock = clock or SystemClock()
    bounds = bounds or bounds_of(config)
    async with _store(config, store) as opened, open_channels(config) as channels:
        wakeup = asyncio.Event()
        templates = TemplateSet(config)  # one Jinja environment per override folder
        metrics = Metrics(
            clock, attempt_bounds_s=attempt_buckets_s(config.delivery.timeout_s, bounds.budget_s)
        )
        runner = AttemptRunner(
            config, opened, channels, templates, clock, budget_s=bounds.budget_s, metrics=metrics
        )
        dispatcher = Dispatcher(
            opened,
            runner,
            config.delivery,
            clock,
            wakeup,
            lease_s=bounds.lease_s,
            owner=owner,
            sleeper=sleeper,
            metrics=metrics,
        )
        try:
            yield Relay(config, opened, dispatcher, Readiness(opened), clock, metrics, wakeup)
        finally:
            metrics.close()  # before the store closes under a scrape's read


@asynccontextmanager
async def _store(config: Config, store: Store | None) -> AsyncIterator[Store]:
    if store is not None:
        yield store
        return
    async with open_store(config) as opened:
        yield opened


@asynccontextmanager
async def running(
    relay: Relay,
    *,
    wake_on_signal: bool = False,
    probe_interval_s: float = PROBE_INTERVAL_S,
    purge_first_delay_s: float = PURGE_FIRST_DELAY_S,
    purge_interval_s: float = PURGE_INTERVAL_S,
    dispatch: bool = True,
    daily_purge: bool = True,
    on_dispatcher_state: Callable[[TaskState], None] | None = None,
) -> AsyncIterator[Relay]:
    """Run the dispatcher, the write probe and the daily purge, each supervised; stopping
    drains the attempts in flight.

    With `wake_on_signal`, SIGUSR1 wakes the dispatcher: how a CLI replay in another
    process tells the server that due times changed, so the server never has to poll.
    A process of a multi-process serve runs only its share: an ingest process neither
    dispatches nor purges (`dispatch`, `daily_purge` False); one dispatcher process
    purges. `on_dispatcher_state` hears each change of the dispatcher's state.
    """
    dispatcher = Supervisor("dispatcher", relay.dispatcher.run, on_state=on_dispatcher_state)
    probe = Supervisor(
        "write probe", lambda: probe_writes(relay.store, relay.clock.now_ms, probe_interval_s)
    )
    retention_s = relay.config.storage.retention_s
    purger = Supervisor(
        "purge",
        lambda: run_daily(
            lambda: purge(
                relay.store,
                relay.clock.now_ms(),
                retention_s,
                erase_wait_ms=SERVE_ERASE_WAIT_MS,
            ),
            first_delay_s=purge_first_delay_s,
            interval_s=purge_interval_s,
        ),
    )
    # PostgreSQL: other instances' ingests and replays wake this dispatcher too.
    listener = Supervisor(
        "wake listener", lambda: relay.store.watch_for_work(relay.wake_dispatcher)
    )
    async with AsyncExitStack() as tasks:
        await tasks.enter_async_context(supervised(probe))
        if daily_purge:
            await tasks.enter_async_context(supervised(purger))
        if not dispatch:
            yield relay
            return
        relay.readiness.dispatcher = dispatcher
        await tasks.enter_async_context(supervised(dispatcher))
        await tasks.enter_async_context(supervised(listener))
        loop = asyncio.get_running_loop()
        if wake_on_signal:
            loop.add_signal_handler(WAKE_SIGNAL, relay.wake_dispatcher)
        try:
            yield relay
        finally:
            if wake_on_signal:
                loop.remove_signal_handler(WAKE_SIGNAL)
            relay.readiness.draining = True
            await relay.dispatcher.drain(relay.config.delivery.shutdown_grace_s)
