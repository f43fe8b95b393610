"""Which event loop `relay serve` runs on: uvloop when installed, else asyncio's own.

uvloop is an optional extra (`pip install 'relay[fast]'`): its loop, written on libuv,
spends less time per request on sockets and callbacks than asyncio's own, which matters
on ingest's hot path (issue 10). `server.event_loop = "asyncio"` keeps asyncio's own
even where uvloop is installed.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def choose_loop(setting: str) -> tuple[str, LoopFactory]:
    """`(name, factory)` of the loop to run: "uvloop" when it is wanted and installed."""
    if setting == "auto":
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            pass
        else:
            factory: LoopFactory = uvloop.new_event_loop
            return "uvloop", factory
    return "asyncio", asyncio.new_event_loop
