"""Retention: forget the buyer data of old events, keep the facts of their deliveries.

`storage.retention` (default 30 days) is how long the store keeps what it was told about
a buyer. `purge` scrubs every event received before that, and its attempts: the buyer's
name, email and phone, the slip's link and codes (Pix ones too), the payloads sent and
the receivers' responses and headers (they may echo the payload). It keeps what the
history needs: statuses, reasons, codes, times, ids, attempt outcomes, latencies.

An event is scrubbed only once none of its deliveries is pending, so nothing still to be
sent loses what it needs; one that is pending now is scrubbed by the first purge after it
settles. A scrubbed event's payload is still an `Event` (other code parses it), with the
buyer and slip fields left out rather than blanked. `relay serve` purges by itself, once
a day (`run_daily`, supervised); `relay purge` does it on demand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from relay.durations import duration_text
from relay.hotmart import Event
from relay.hotmart_payment import Payment
from relay.records import ScrubbedEvent, ScrubCandidate
from relay.store import Store

log = logging.getLogger("relay.retention")

# Events per transaction: small enough that ingest, queued behind a purge on the store's
# one connection, waits milliseconds; large enough that a first purge of a year of
# history is a few thousand transactions.
PURGE_BATCH_EVENTS = 200
# `relay serve` purges this long after it starts (once it is up and has sent what was
# due), then once a day.
PURGE_FIRST_DELAY_S = 30.0
PURGE_INTERVAL_S = 86400.0
# How long the purge inside `relay serve` waits for another process's read (a backup, a
# `relay history`) to let go of the WAL. Ingest queues behind it on the relay's one
# connection, so it is short; if the WAL stays held, the purge runs again this much later
# rather than a day later, since the WAL still holds old copies of what was scrubbed.
SERVE_ERASE_WAIT_MS = 100
PURGE_RETRY_S = 300.0
# Before every real (received_at_ms, row id): where a walk over the candidates starts.
_START = (-1, -1)

# What a scrubbed payload keeps, field by field; everything else is left out. A field
# added to `Event` or `Payment` later is dropped until it is named here, and a test
# fails until it is named in one list or the other (tests/test_retention.py).
KEPT_EVENT_FIELDS = frozenset(
    {"id", "event", "version", "source", "created_at_ms", "product", "affiliates", "purchase"}
)
SCRUBBED_EVENT_FIELDS = frozenset({"buyer", "payment"})
KEPT_PAYMENT_FIELDS = frozenset({"type", "method", "expires_at_ms", "installments"})
SCRUBBED_PAYMENT_FIELDS = frozenset({"slip_url", "slip_code", "pix_code", "pix_qrcode"})


@dataclass(frozen=True)
class PurgeReport:
    received_before_ms: int
    events: int  # events whose buyer data was scrubbed
    attempts: int  # attempts of those events whose payload and response were emptied
    # False when the store could not yet erase the old copies of what was scrubbed (a
    # reader elsewhere held the WAL); the rows are scrubbed, the files not yet clean.
    erased: bool

    def summary(self, retention_s: float) -> str:
        before = datetime.fromtimestamp(self.received_before_ms / 1000, UTC)
        text = (
            f"scrubbed buyer data from {self.events} event(s) and {self.attempts} attempt(s) "
            f"received before {before:%Y-%m-%d %H:%M:%S} UTC "
            f"(storage.retention = {duration_text(retention_s)})"
        )
        if not self.erased:
            text += "; the store's files still hold old copies: another process kept the "
            text += "WAL busy, so run `relay purge` again"
        return text


def scrubbed_payload(candidate: ScrubCandidate) -> str:
    """The event's payload with only what `KEPT_*` names; still a valid `Event`.

    A payload that does not parse (a row written by a broken version, say) cannot be
    sorted field by field: it is replaced by the bare event its own columns name.
    """
    try:
        event = Event.model_validate_json(candidate.payload_json)
    except ValidationError:
        return Event(id=candidate.hotmart_id, event=candidate.event_name).model_dump_json()
    payment = Payment(**{name: getattr(event.payment, name) for name in KEPT_PAYMENT_FIELDS})
    kept = {name: getattr(event, name) for name in KEPT_EVENT_FIELDS}
    return Event(**kept, payment=payment).model_dump_json()


async def purge(
    store: Store,
    now_ms: int,
    retention_s: float,
    *,
    erase_wait_ms: int,
    batch: int = PURGE_BATCH_EVENTS,
) -> PurgeReport:
    """Scrub every event received more than `retention_s` before `now_ms`; then make the
    store's files forget the old copies, waiting at most `erase_wait_ms` for other
    processes to let go of them. Logs and returns what it did."""
    before_ms = now_ms - int(retention_s * 1000)
    events = attempts = 0
    after = _START
    while True:
        candidates = await store.scrub_candidates(before_ms, after, batch)
        if not candidates:
            break
        scrubbed = [ScrubbedEvent(c.event_row_id, scrubbed_payload(c)) for c in candidates]
        counts = await store.scrub(scrubbed, now_ms)
        events += counts.events
        attempts += counts.attempts
        last = candidates[-1]
        after = (last.received_at_ms, last.event_row_id)
    # Even with nothing scrubbed now: an earlier purge's erase may not have finished.
    erased = await store.erase_overwritten(erase_wait_ms)
    report = PurgeReport(before_ms, events, attempts, erased)
    if erased:
        log.info("purge: %s", report.summary(retention_s))
    else:
        log.warning("purge: %s", report.summary(retention_s))
    return report


Sleep = Callable[[float], Awaitable[None]]


async def run_daily(
    purge_once: Callable[[], Awaitable[PurgeReport]],
    *,
    first_delay_s: float = PURGE_FIRST_DELAY_S,
    interval_s: float = PURGE_INTERVAL_S,
    retry_s: float = PURGE_RETRY_S,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Purge shortly after start, then every `interval_s` (every `retry_s` while the old
    copies could not be erased), until cancelled.

    A purge that raises ends this; the supervisor around it logs the error with its
    traceback and starts it again, so a failure is neither silent nor final.
    """
    await sleep(first_delay_s)
    while True:
        report = await purge_once()
        await sleep(interval_s if report.erased else retry_s)
