"""Watch the store's writes, so readiness can answer from state instead of waiting on them.

A write that waits on another process's lock can take `busy_timeout`; readiness must
answer within 100 ms all the same. So every write says when it starts and how it ends,
and readiness reads the last outcome and the age of the oldest write still waiting.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from relay.records import WriteHealth


class WriteMonitor:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._in_progress: dict[int, float] = {}  # write number -> when it started
        self._numbers = itertools.count()
        self._last_failure: str | None = None

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Around one write; the caller reports how it ended with `worked` or `failed`."""
        number = next(self._numbers)
        self._in_progress[number] = self._monotonic()
        try:
            yield
        finally:
            del self._in_progress[number]

    def worked(self) -> None:
        self._last_failure = None

    def failed(self, kind: str) -> None:
        self._last_failure = kind

    def health(self) -> WriteHealth:
        oldest = min(self._in_progress.values(), default=None)
        stuck_for_s = 0.0 if oldest is None else self._monotonic() - oldest
        return WriteHealth(last_failure=self._last_failure, stuck_for_s=stuck_for_s)
