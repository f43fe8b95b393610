"""Time as the engine sees it, injectable: a clock for "now", a sleeper for waiting.

Production uses the system's; unit tests drive the engine with fakes, so retries,
leases and drains run without waiting real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


# Wait for `event` at most `timeout_s` (None: until it is set); True if it was set.
Sleeper = Callable[[asyncio.Event, float | None], Awaitable[bool]]


async def wait_for_event(event: asyncio.Event, timeout_s: float | None) -> bool:
    """The real sleeper: the event, or the timeout, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), timeout=timeout_s)
    except TimeoutError:
        return False
    return True
