"""The retry schedule, pure: given how an attempt failed, retry when, or give up.

Convoy's two classic bugs are ruled out by construction: the number of attempts is
bounded by the schedule (retries always stop), and every failure that is not the
last returns a finite delay (a retry is never silently dropped).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from relay.outcomes import DeliveryError, PermanentError, TransientError

JITTER_FRACTION = 0.2  # ±20% spreads a burst of failures so retries don't stampede
# A receiver's Retry-After is honoured up to this; beyond it we keep our own schedule's pace.
RETRY_AFTER_CAP_S = 6 * 3600.0


@dataclass(frozen=True)
class RetryDecision:
    give_up: bool
    delay_s: float = 0.0
    reason: str = ""


def next_retry(
    attempts_made: int,
    delays_s: Sequence[float],
    error: DeliveryError,
    rng: random.Random,
) -> RetryDecision:
    """Decide after attempt number `attempts_made` (1-based) failed with `error`."""
    if isinstance(error, PermanentError):
        return RetryDecision(give_up=True, reason=f"permanent failure: {error.reason}")
    if attempts_made > len(delays_s):
        return RetryDecision(
            give_up=True, reason=f"gave up after {attempts_made} attempts: {error.reason}"
        )
    retry_after_s = error.retry_after_s if isinstance(error, TransientError) else None
    if retry_after_s is not None:
        return RetryDecision(give_up=False, delay_s=min(max(retry_after_s, 0.0), RETRY_AFTER_CAP_S))
    base_s = delays_s[attempts_made - 1]
    jitter = rng.uniform(1.0 - JITTER_FRACTION, 1.0 + JITTER_FRACTION)
    return RetryDecision(give_up=False, delay_s=base_s * jitter)
