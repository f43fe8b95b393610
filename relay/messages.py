"""What leaves the relay: a rendered message, before a channel sends it.

The pure core renders these and bounds their size; the channels send them. They sit
below both, so neither reaches into the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from relay.outcomes import AttemptReport


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


Outgoing = WebhookMessage | EmailMessageSpec


class Sender(Protocol):
    """Every channel behind one call: the message's type picks the channel.

    Raises `TransientError` or `PermanentError` (relay.outcomes) when the send fails;
    `now_s` is the sender's clock, for what a message is signed or stamped with.
    """

    async def send(self, message: Outgoing, *, now_s: float) -> AttemptReport: ...
