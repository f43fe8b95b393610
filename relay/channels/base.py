"""What every channel takes and returns; the errors it raises live in `relay.outcomes`."""

from __future__ import annotations

from dataclasses import dataclass

from relay.outcomes import AttemptReport, DeliveryError, PermanentError, TransientError

# Re-exported: the channels and their tests still name the error vocabulary from here.
__all__ = [
    "MAX_RESPONSE_EXCERPT_BYTES",
    "AttemptReport",
    "DeliveryError",
    "EmailMessageSpec",
    "PermanentError",
    "TransientError",
    "WebhookMessage",
]

# What the history keeps of a response body; enough to debug, bounded per attempt.
MAX_RESPONSE_EXCERPT_BYTES = 20_000


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
