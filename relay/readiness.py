"""Is this relay ready to accept and deliver? Answered from state, never by waiting.

`/readyz` must answer within 100 ms even while a write waits on another process's
lock, so it reads what is already known: how the store's last write ended, how long a
write has been waiting, whether the dispatcher runs, whether we are draining. A cheap
write probe, run every `PROBE_INTERVAL_S` by a supervised task, keeps the first two
fresh when nothing else writes, and turns readiness back on by itself once writes work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from relay.store import Store, StoreUnavailable
from relay.supervisor import TaskState

# A healthy write takes milliseconds. One that has waited this long is behind a lock or
# a failing disk, and ingest's answers will be late: not ready.
WRITE_STUCK_AFTER_S = 1.0
# How often the probe writes: often enough that a store that recovers is seen within
# seconds, rarely enough to cost nothing (one tiny fsync'd write).
PROBE_INTERVAL_S = 5.0


class DispatcherState(Protocol):
    """The dispatcher's supervisor in this process, or the dispatcher processes beside it."""

    @property
    def state(self) -> TaskState: ...


@dataclass
class Readiness:
    store: Store
    dispatcher: DispatcherState | None = None  # set once the dispatcher is supervised
    draining: bool = False
    stuck_after_s: float = WRITE_STUCK_AFTER_S

    def report(self) -> tuple[bool, dict[str, object]]:
        """(ready, the JSON body): each check's state in fixed words, never error text."""
        health = self.store.write_health()
        if health.stuck_for_s >= self.stuck_after_s:
            store_state = "write stuck"
        else:
            store_state = health.last_failure or "ok"
        dispatcher_state = self.dispatcher.state if self.dispatcher else TaskState.STOPPED
        checks: dict[str, str] = {
            "store": store_state,
            "dispatcher": dispatcher_state.value,
            "draining": "yes" if self.draining else "no",
        }
        healthy = {"store": "ok", "dispatcher": TaskState.RUNNING.value, "draining": "no"}
        failed = [name for name, state in checks.items() if state != healthy[name]]
        body: dict[str, object] = {"status": "unavailable" if failed else "ok", "checks": checks}
        if failed:
            body["failed"] = failed
        return not failed, body


async def probe_writes(
    store: Store,
    now_ms: Callable[[], int],
    interval_s: float = PROBE_INTERVAL_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Write the probe row forever; the store's write monitor records each outcome."""
    while True:
        # A failure is recorded by the store as its last write outcome: readiness says so.
        with suppress(StoreUnavailable):
            await store.probe_write(now_ms())
        await sleep(interval_s)
