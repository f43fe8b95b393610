"""Which event loop `relay serve` runs on: uvloop when installed, else asyncio's own.

uvloop is an optional extra (`pip install 'relay[fast]'`): its loop, written on libuv,
spends less time per request on sockets and callbacks than asyncio's own, which matters
on ingest's hot path (issue 10). `server.event_loop = "asyncio"` keeps asyncio's own
even where uvloop is installed.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")

log = logging.getLogger("relay.serve")


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


def run_on_chosen_loop(main: Coroutine[Any, Any, T], setting: str, who: str) -> T:
    """Run `main` to completion on the loop `setting` picks, logging which (`who`: the
    process, so a multi-process serve says it for each child)."""
    name, factory = choose_loop(setting)
    with asyncio.Runner(loop_factory=factory) as runner:
        log.info("event loop: %s (%s)", name, who)
        return runner.run(main)
