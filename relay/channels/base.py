"""What every channel takes and returns; errors are data the history page shows."""

from __future__ import annotations

from dataclasses import dataclass, field

# What the history keeps of a response body; enough to debug, bounded per attempt.
MAX_RESPONSE_EXCERPT_BYTES = 20_000


@dataclass(frozen=True)
class AttemptReport:
    """What the receiver said, for the history: kept for successes and failures alike."""

    status_code: int | None = None  # HTTP status or SMTP reply code
    response_excerpt: str = ""  # at most MAX_RESPONSE_EXCERPT_BYTES
    response_headers: dict[str, str] = field(default_factory=dict)  # only headers of note
    latency_ms: float = 0.0
    detail: str = ""  # e.g. "250 OK queued as ...", "written to var/mail/new/x.eml"


class DeliveryError(Exception):
    """An attempt failed; `report` holds what the receiver said, `reason` why we failed it."""

    def __init__(self, reason: str, report: AttemptReport | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.report = report or AttemptReport()


class TransientError(DeliveryError):
    """Worth retrying on the schedule: timeouts, connection errors, 5xx, 408, 429, 3xx, SMTP 4xx."""

    def __init__(
        self, reason: str, report: AttemptReport | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason, report)
        self.retry_after_s = retry_after_s


class PermanentError(DeliveryError):
    """Retrying cannot help: most 4xx, SMTP 5xx, a refused address, a broken template."""

    def __init__(
        self, reason: str, report: AttemptReport | None = None, disable_destination: bool = False
    ) -> None:
        super().__init__(reason, report)
        # True for a 410 Gone: the receiver asked us to stop sending.
        self.disable_destination = disable_destination


@dataclass(frozen=True)
class WebhookMessage:
    """One rendered webhook POST. `message_id` is the same on every attempt."""

    url: str
    secret: str  # whsec_...
    message_id: str
    body: bytes

    @property
    def payload(self) -> str:
        """What the history shows as sent."""
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class EmailMessageSpec:
    """One rendered email. `message_id` becomes the stable Message-ID header."""

    to: str
    subject: str
    text: str
    html: str
    message_id: str

    @property
    def payload(self) -> str:
        """What the history shows as sent: the headers that matter and the text part."""
        return f"To: {self.to}\nSubject: {self.subject}\n\n{self.text}"
