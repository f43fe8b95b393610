"""What every channel takes and returns: messages from `relay.messages`, errors from
`relay.outcomes`, both below the channels."""

from __future__ import annotations

from relay.messages import EmailMessageSpec, WebhookMessage
from relay.outcomes import AttemptReport, DeliveryError, PermanentError, TransientError

# Re-exported: the channels and their tests name their vocabulary from here.
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
