"""What a running relay holds: config, store, readiness, clock and the dispatcher's wake-up.

Built once by `relay.app` and handed down explicitly; handlers reach it through the
typed `RUNTIME` app key, never through globals.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from relay.config import Config
from relay.readiness import Readiness
from relay.store import Store


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class Runtime:
    config: Config
    store: Store
    readiness: Readiness
    clock: Clock = field(default_factory=SystemClock)
    # Set when ingest commits something to send; the dispatcher waits on it.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def wake_dispatcher(self) -> None:
        self.wakeup.set()


RUNTIME = web.AppKey("runtime", Runtime)
