"""Keep a side task running: on a crash, log it with its traceback, back off, restart.

procrastinate's worker watches its side tasks and arq calls `.result()` so errors
surface; a task that dies quietly is how the dispatcher used to stop delivering while
ingest kept answering `accepted`. `Supervisor.state` is what readiness reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from enum import StrEnum

from relay.outcomes import loggable

log = logging.getLogger("relay.supervisor")

# A crash is retried soon (most are one bad moment), then less often, so a crash that
# repeats fills neither the log nor the CPU; the first restart after a long healthy run
# is quick again.
RESTART_BACKOFF_MIN_S = 0.5
RESTART_BACKOFF_MAX_S = 60.0
HEALTHY_RUN_S = 60.0

Sleep = Callable[[float], Awaitable[None]]


class TaskState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"  # it crashed; waiting to start it again
    STOPPED = "stopped"


class Supervisor:
    """Runs `body()` until it returns or is cancelled, restarting it when it raises."""

    def __init__(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        *,
        backoff_min_s: float | None = None,
        backoff_max_s: float | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        on_state: Callable[[TaskState], None] | None = None,
    ) -> None:
        self.name = name
        self._body = body
        # Read here, not bound as defaults, so a test can shorten them for a whole service.
        self._backoff_min_s = RESTART_BACKOFF_MIN_S if backoff_min_s is None else backoff_min_s
        self._backoff_max_s = RESTART_BACKOFF_MAX_S if backoff_max_s is None else backoff_max_s
        self._sleep = sleep
        self._monotonic = monotonic
        # Told of every change: how a dispatcher process shows the serving parent's other
        # processes that it runs (relay.dispatcher_board).
        self._on_state = on_state
        self._state = TaskState.STARTING
        self.restarts = 0

    @property
    def state(self) -> TaskState:
        return self._state

    @state.setter
    def state(self, state: TaskState) -> None:
        self._state = state
        if self._on_state is not None:
            self._on_state(state)

    @property
    def running(self) -> bool:
        return self.state == TaskState.RUNNING

    async def run(self) -> None:
        backoff_s = self._backoff_min_s
        try:
            while True:
                self.state = TaskState.RUNNING
                started = self._monotonic()
                try:
                    await self._body()
                except Exception as exc:
                    if self._monotonic() - started >= HEALTHY_RUN_S:
                        backoff_s = self._backoff_min_s
                    self.state = TaskState.RESTARTING
                    self.restarts += 1
                    log.error(
                        "%s stopped on an error (%s); restarting in %.1fs",
                        self.name,
                        type(exc).__name__,
                        backoff_s,
                        exc_info=loggable(exc),
                    )
                    await self._sleep(backoff_s)
                    backoff_s = min(backoff_s * 2, self._backoff_max_s)
                    continue
                return  # it finished of its own accord (asked to stop)
        finally:
            self.state = TaskState.STOPPED


@asynccontextmanager
async def supervised(supervisor: Supervisor) -> AsyncIterator[asyncio.Task[None]]:
    """Run the supervisor for the life of the block; cancel it at the end."""
    task = asyncio.create_task(supervisor.run(), name=f"supervise-{supervisor.name}")
    try:
        yield task
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
