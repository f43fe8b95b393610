"""How an attempt can end, as data: the vocabulary shared by channels, the engine and retry.

It sits below both the pure core (`retry`) and the channels, and imports nothing with
I/O, so the layers read edge -> engine -> channels and store -> core with no arrow back.
Errors are data: each carries what the history page shows (status, excerpt, reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Said where a stored text was cut to its bound, so nobody mistakes it for the whole.
CUT_MARK = "\n[cut: the rest was not kept]"


class Fault(StrEnum):
    """Whose fault a failed attempt was. Only the destination's moves its failure run."""

    # The receiver or the way to it: an HTTP status, a refused or reset connection, a
    # timeout, an SMTP reply, a destination address or URL that cannot be used.
    DESTINATION = "destination"
    # Ours or the event's: a template error, a bug, a render over its bound, a value in
    # the event that cannot be sent. Another destination would fail the same way, so
    # counting it would disable healthy destinations for what they cannot fix.
    OURS = "ours"


@dataclass(frozen=True)
class AttemptReport:
    """What the receiver said, for the history: kept for successes and failures alike."""

    status_code: int | None = None  # HTTP status or SMTP reply code
    response_excerpt: str = ""  # bounded by the channel that read it
    response_headers: dict[str, str] = field(default_factory=dict)  # only headers of note
    latency_ms: float = 0.0
    detail: str = ""  # e.g. "250 OK queued as ...", "written to var/mail/new/x.eml"
    response_cut: bool = False  # the receiver sent more than the excerpt keeps


class DeliveryError(Exception):
    """An attempt failed; `report` holds what the receiver said, `reason` why we failed it."""

    def __init__(
        self, reason: str, report: AttemptReport | None = None, fault: Fault = Fault.DESTINATION
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report = report or AttemptReport()
        self.fault = fault

    @property
    def counts_against_destination(self) -> bool:
        return self.fault == Fault.DESTINATION


class TransientError(DeliveryError):
    """Worth retrying on the schedule: timeouts, connection errors, 5xx, 408, 429, 3xx, SMTP 4xx."""

    def __init__(
        self,
        reason: str,
        report: AttemptReport | None = None,
        retry_after_s: float | None = None,
        fault: Fault = Fault.DESTINATION,
    ) -> None:
        super().__init__(reason, report, fault)
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    """Retrying cannot help: most 4xx, SMTP 5xx, a refused address, a broken template."""

    def __init__(
        self,
        reason: str,
        report: AttemptReport | None = None,
        disable_destination: bool = False,
        fault: Fault = Fault.DESTINATION,
    ) -> None:
        super().__init__(reason, report, fault)
        # True for a 410 Gone: the receiver asked us to stop sending.
        self.disable_destination = disable_destination


def clip_utf8(text: str, max_bytes: int, *, cut: bool = False) -> str:
    """`text` in at most `max_bytes` of UTF-8, ending in CUT_MARK if anything was left out.

    `cut` says the text is already a cut (a response read only in part), so it is marked
    even when it fits.
    """
    encoded = text.encode("utf-8", errors="surrogatepass")
    if len(encoded) <= max_bytes and not cut:
        return text
    room = max(max_bytes - len(CUT_MARK.encode()), 0)
    # Cutting inside a multi-byte character leaves half of it: drop that half.
    kept = encoded[:room].decode("utf-8", errors="ignore")
    return kept + CUT_MARK


class WithheldMessage(Exception):
    """Stands in for an exception in a log record: its traceback, without its text.

    An exception's message can quote what it choked on, and here that may be buyer data
    (pydantic quotes the input value). The frames say where the bug is; the type says
    what it was; the text stays out of the logs whatever formatter prints them.
    """


def loggable(exc: BaseException) -> tuple[type[BaseException], BaseException, Any]:
    """`exc_info` for `exc` with its message withheld (see `WithheldMessage`)."""
    stand_in = WithheldMessage(f"{type(exc).__module__}.{type(exc).__qualname__}")
    return WithheldMessage, stand_in.with_traceback(exc.__traceback__), exc.__traceback__
