"""Log lines that outside data cannot forge, and tracebacks that cannot leak a buyer.

Every message is escaped, so an event id holding a newline stays on its line.
A traceback keeps what finds a bug (the frames, the source lines, the exception
types of the whole chain) and drops what an exception says: its text can quote
the payload it choked on, with a buyer's name, email, phone or document in it.
What is kept of an exception beyond its type is a code that cannot hold data: an
OSError's errno and a sqlite3 error's name. Anything that logs with
`exc_info=True` relies on this module to scrub it.
"""

from __future__ import annotations

import errno as errno_names
import json
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from typing import IO, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
HANDLER_NAME = "relay"  # how `install` finds the handler it put there before
MAX_MESSAGE_CHARS = 10_000  # one log line stays readable, whatever a value held
_MAX_GROUP_MEMBERS = 10  # an ExceptionGroup of a thousand members is summed up, not printed

_ESCAPES = {
    **{code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
    ord("\t"): "\\t",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    # Line and paragraph separators end a line for some readers; bidi controls can make
    # a line read differently from what it holds.
    **{
        code: f"\\u{code:04x}"
        for code in (0x2028, 0x2029, 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F))
    },
    **{code: f"\\u{code:04x}" for code in range(0x2066, 0x206A)},
}


def escape_controls(text: str) -> str:
    """`text` on one line: control, separator and bidi characters as visible escapes."""
    return text.translate(_ESCAPES)


def scrubbed_traceback(exc: BaseException) -> str:
    """Like `traceback.format_exception`, with every exception message withheld."""
    return "\n".join(_chain_lines(exc, set()))


def _chain_lines(exc: BaseException, seen: set[int]) -> list[str]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    lines: list[str] = []
    for earlier, later in zip(reversed(chain), [*reversed(chain[:-1]), None], strict=True):
        lines.extend(_one_exception(earlier, seen))
        if later is not None:
            lines.append("")
            if later.__cause__ is earlier:
                lines.append("The above exception was the direct cause of the following exception:")
            else:
                lines.append("During handling of the above exception, another exception occurred:")
            lines.append("")
    return lines


def _one_exception(exc: BaseException, seen: set[int]) -> list[str]:
    lines = []
    if exc.__traceback__ is not None:
        lines.append("Traceback (most recent call last):")
        frames = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__))
        lines.extend("".join(frames.format()).rstrip("\n").split("\n"))
    lines.append(_describe(exc))
    if isinstance(exc, BaseExceptionGroup):
        members = exc.exceptions
        for number, member in enumerate(members[:_MAX_GROUP_MEMBERS], start=1):
            lines.append(f"  +-- member {number} of {len(members)}:")
            lines.extend(f"  | {line}" for line in _chain_lines(member, seen))
        if len(members) > _MAX_GROUP_MEMBERS:
            lines.append(f"  +-- {len(members) - _MAX_GROUP_MEMBERS} more members not shown")
    return lines


def _describe(exc: BaseException) -> str:
    kind = type(exc)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins", "__main__"):
        name = f"{kind.__module__}.{name}"
    codes = []
    if isinstance(exc, OSError) and isinstance(exc.errno, int):  # OSError("a", "b") has "a"
        symbol = errno_names.errorcode.get(exc.errno, "?")
        codes.append(f"[Errno {exc.errno}] {symbol}: {os.strerror(exc.errno)}")
    sqlite_name = getattr(exc, "sqlite_errorname", None)
    if isinstance(sqlite_name, str):
        codes.append(sqlite_name)
    if str(exc) or getattr(exc, "__notes__", None):
        codes.append("(message withheld: it may quote buyer data)")
    return " ".join([name, *codes])


def _message(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if len(text) > MAX_MESSAGE_CHARS:
        text = f"{text[:MAX_MESSAGE_CHARS]}... ({len(text) - MAX_MESSAGE_CHARS} more characters)"
    return escape_controls(text)


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _details(record: logging.LogRecord) -> dict[str, str]:
    """The traceback and stack of a record, scrubbed and escaped line by line."""
    found = {}
    if record.exc_info and record.exc_info[1] is not None:
        try:
            found["exception"] = scrubbed_traceback(record.exc_info[1])
        except Exception as exc:  # logging would print the failure with its own, raw traceback
            found["exception"] = f"(traceback not rendered: {type(exc).__name__})"
    if record.stack_info:
        found["stack"] = record.stack_info  # frames only: code, never data
    return {
        key: "\n".join(escape_controls(line) for line in text.split("\n"))
        for key, text in found.items()
    }


class TextFormatter(logging.Formatter):
    """`2026-11-29T21:05:00.123Z INFO relay.ingest: event ...`, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        # record.exc_text is ignored on purpose: another handler may have cached it unscrubbed.
        head = f"{_timestamp(record)} {record.levelname} {record.name}: {_message(record)}"
        return "\n".join([head, *_details(record).values()])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and exception or stack."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            **_details(record),
        }
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter `relay` logs with; tests put it on their own handlers."""
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record comes, like logging.lastResort."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr


def uninstall() -> None:
    """Take away the handler `install` put on the root logger, if any."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)


def install(
    log_format: LogFormat = "text", level: str = "info", *, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every log record to `stream` (stderr by default) through the safe formatter.

    Calling it again replaces the handler it installed before, so `main` can run twice
    in one process (as the tests do) without printing every line twice.
    """
    uninstall()
    root = logging.getLogger()
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
