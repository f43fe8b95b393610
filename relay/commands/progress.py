"""A one-line progress bar for commands that wait for deliveries to settle."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class ProgressBar:
    """A one-line bar on stderr while deliveries settle, drawn only on a terminal.

    Elsewhere (a pipe, a log file) it writes one summary line at the end instead of
    carriage returns. While it is drawn, a log line first clears it (`beside_logs`), so
    the two never share a line; the next step draws it again.
    """

    def __init__(self, total: int, out: TextIO | None = None, width: int = 30) -> None:
        self.total, self.done, self._width = total, 0, width
        self._out = out or sys.stderr
        self._live = self._out.isatty()
        self._drawn = False

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._live:
            filled = self._width * min(self.done, self.total) // max(self.total, 1)
            bar = "#" * filled + "." * (self._width - filled)
            self._out.write(f"\r[{bar}] {self.done}/{self.total}")
            self._out.flush()
            self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._drawn = False

    def finish(self) -> None:
        if self._live:
            if self._drawn:
                self._out.write("\n")
                self._drawn = False
        else:
            self._out.write(f"settled {self.done}/{self.total}\n")
        self._out.flush()

    @contextmanager
    def beside_logs(self) -> Iterator[None]:
        """While the block runs, every log handler clears the bar before it writes."""
        bar = self

        class _ClearBar(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                bar.clear()
                return True

        handlers = list(logging.getLogger().handlers)
        clear = _ClearBar()
        for handler in handlers:
            handler.addFilter(clear)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(clear)
            self.finish()
