"""Prometheus metrics of one running relay: what ingest, claims and attempts count, what
the store holds when scraped, and the exposition that `GET /metrics` (relay.app, behind
`admin.metrics_token` when set) answers with.

Counts are plain integers kept on the event loop, the only place that records them, and
`prometheus_client` turns them into the exposition when scraped (a collector of its
own per relay, never the library's global registry). Its metric objects take a thread
lock on every increment and label lookup; here a count costs a dict update, so metrics
add no lock and no store round trip to ingest or to an attempt (issue 10).

No label value comes from a request unchecked: producers are the config's, event names
outside Hotmart's known set become `other`, statuses and channels are the relay's own
words. Nothing here ever carries buyer data or a secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from relay.clock import Clock
from relay.hotmart import KNOWN_EVENTS
from relay.records import Channel, DeliveryStatus, NewDelivery, QueueGauges
from relay.recovery import SLIP_OUTCOMES

log = logging.getLogger("relay.metrics")
Counts = dict[tuple[str, ...], int]  # a counter's value per label values

OTHER_EVENT = "other"  # an event name Hotmart does not document: never a label of its own
NO_CHANNEL = "none"  # a row with no destination (no affiliate, none configured), or unreadable
# The refusals ingest answers: each has its own series from the start, at 0.
INGEST_REJECTIONS = (400, 401, 408, 413, 415, 503)
# An attempt takes milliseconds on a local receiver and up to the delivery timeout (then
# its budget) on a slow one: this ladder up to the timeout, then the timeout and the budget.
ATTEMPT_LADDER_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Ingest answers in milliseconds; a 503 waits up to busy_timeout (5 s by default) first.
INGEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# A scrape waits this long for the store's gauges; behind a locked store it answers with
# the last values read and says how old they are. Well inside Prometheus' 10 s default.
GAUGE_READ_TIMEOUT_S = 0.5


def attempt_buckets_s(timeout_s: float, budget_s: float) -> tuple[float, ...]:
    """The attempt histogram's upper bounds for a delivery timeout and attempt budget."""
    return (*(b for b in ATTEMPT_LADDER_S if b < timeout_s), timeout_s, budget_s)


# For a relay built without its config's bounds (a unit test's): the default timeout's.
DEFAULT_ATTEMPT_BUCKETS_S = attempt_buckets_s(10.0, 25.0)


def bearer_matches(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    # A header may carry any bytes; aiohttp keeps the ones that are not UTF-8 as surrogates.
    given_bytes = given.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode())


@dataclass
class _Histogram:
    """Bucket counts per label values; `observe` is a bisect and two additions."""

    bounds_s: tuple[float, ...]
    series: dict[tuple[str, ...], tuple[list[int], list[float]]] = field(default_factory=dict)

    def observe(self, labels: tuple[str, ...], value_s: float) -> None:
        counts, total = self.series.get(labels) or self._new(labels)
        counts[bisect_left(self.bounds_s, value_s)] += 1  # value <= bound: Prometheus' `le`
        total[0] += value_s

    def _new(self, labels: tuple[str, ...]) -> tuple[list[int], list[float]]:
        made = ([0] * (len(self.bounds_s) + 1), [0.0])
        self.series[labels] = made
        return made

    def plus(self, others: Iterable[Any]) -> _Histogram:
        """This histogram with other processes' series (as `snapshot` writes them) added."""
        summed = _Histogram(self.bounds_s)
        for labels, (counts, total) in self.series.items():
            summed.series[labels] = (list(counts), [total[0]])
        for series in others:
            for labels, counts, total in series:
                mine, my_total = summed.series.get(tuple(labels)) or summed._new(tuple(labels))
                if len(counts) != len(mine):
                    raise ValueError("histogram buckets differ")
                for i, count in enumerate(counts):
                    mine[i] += int(count)
                my_total[0] += float(total)
        return summed

    def snapshot(self) -> list[Any]:
        return [[list(labels), counts, total[0]] for labels, (counts, total) in self.series.items()]

    def family(self, name: str, doc: str, labelnames: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=labelnames)
        edges = [str(float(b)) for b in self.bounds_s] + ["+Inf"]  # as the library writes `le`
        for labels, (counts, total) in sorted(self.series.items()):
            buckets = list(zip(edges, accumulate(counts), strict=True))
            family.add_metric(labels, buckets, total[0])
        return family


class _StoreGauges:
    """The store's gauges as last read, and at most one read in flight.

    A read that outlasts a scrape is not abandoned: it lands for the next scrape, which
    waits for it instead of queueing another, so a stuck store never collects reads.
    """

    def __init__(self, clock: Clock, timeout_s: float) -> None:
        self._clock = clock
        self._timeout_s = timeout_s
        self._reading: asyncio.Task[QueueGauges] | None = None
        self.last: QueueGauges | None = None
        self.read_at_ms: int | None = None

    async def refresh(self, read: Callable[[], Awaitable[QueueGauges]]) -> None:
        if self._reading is None:
            self._reading = asyncio.ensure_future(read())
            # Registered first, so it has run before any waiter below wakes.
            self._reading.add_done_callback(self._landed)
        await asyncio.wait({self._reading}, timeout=self._timeout_s)
        if self._reading is not None:
            log.warning(
                "metrics: the store did not answer within %gs; serving its last gauges",
                self._timeout_s,
            )

    def _landed(self, task: asyncio.Task[QueueGauges]) -> None:
        self._reading = None
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None:
            # The type only, as everywhere: the gauges age, and say so.
            log.warning("metrics: store gauges not read (%s)", type(failure).__name__)
            return
        self.last = task.result()
        self.read_at_ms = self._clock.now_ms()

    def cancel(self) -> None:
        if self._reading is not None:
            self._reading.cancel()


class Metrics:
    """The counts of one running relay and its registry; `exposition` answers a scrape."""

    def __init__(
        self,
        clock: Clock,
        *,
        attempt_bounds_s: Sequence[float] = DEFAULT_ATTEMPT_BUCKETS_S,
        gauge_timeout_s: float = GAUGE_READ_TIMEOUT_S,
    ) -> None:
        self._clock = clock
        self._events: Counts = {}
        self._rejections: Counts = {(str(status),): 0 for status in INGEST_REJECTIONS}
        self._deliveries: Counts = {}
        self._slips: Counts = {(outcome,): 0 for outcome in SLIP_OUTCOMES}
        self._attempts = _Histogram(tuple(attempt_bounds_s))
        self._ingest = _Histogram(INGEST_BUCKETS_S)
        self._gauges = _StoreGauges(clock, gauge_timeout_s)
        # During one multi-process scrape: the other processes' snapshots, and how many
        # did not answer (relay.metrics_peers).
        self._peers: list[dict[str, Any]] = []
        self._peers_missing: int | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def _counters(self) -> dict[str, Counts]:
        return {
            "events": self._events,
            "rejections": self._rejections,
            "deliveries": self._deliveries,
            "slips": self._slips,
        }

    def _histograms(self) -> dict[str, _Histogram]:
        return {"attempts": self._attempts, "ingest": self._ingest}

    def snapshot(self) -> bytes:
        """This process's counts, for the process that answers a scrape to add up."""
        return orjson.dumps(
            {
                "counters": {
                    name: [[list(labels), value] for labels, value in counts.items()]
                    for name, counts in self._counters().items()
                },
                "histograms": {name: h.snapshot() for name, h in self._histograms().items()},
            }
        )

    def _summed(self) -> tuple[dict[str, Counts], dict[str, _Histogram], int]:
        """Own counts plus the peers' of this scrape: a peer's malformed snapshot is
        left out whole, and counted as missing."""
        counters = {name: Counter(counts) for name, counts in self._counters().items()}
        histograms = self._histograms()
        answered = 0
        for peer in self._peers:
            try:
                added = {
                    name: Counter({tuple(labels): int(value) for labels, value in rows})
                    for name, rows in peer["counters"].items()
                    if name in counters
                }
                grown = {
                    name: histograms[name].plus([peer["histograms"][name]]) for name in histograms
                }
            except (AttributeError, KeyError, TypeError, ValueError):
                self._peers_missing = (self._peers_missing or 0) + 1
                continue
            for name, counts in added.items():
                counters[name].update(counts)
            histograms = grown
            answered += 1
        return {name: dict(counts) for name, counts in counters.items()}, histograms, answered

    # -- what ingest and attempts record (on the event loop) ------------------------

    def event_ingested(
        self, producer_id: str, event_name: str, outcome: str, rows: Iterable[NewDelivery]
    ) -> None:
        """An event answered 200 (`outcome`: accepted, duplicate, ignored); the rows born
        final (withheld, skipped, ignored) settle with it, unless it was a duplicate."""
        event = event_name if event_name in KNOWN_EVENTS else OTHER_EVENT
        key = (producer_id, event, outcome)
        self._events[key] = self._events.get(key, 0) + 1
        if outcome == "duplicate":
            return
        for row in rows:
            if row.status != DeliveryStatus.PENDING:
                self.delivery_settled(row.channel, row.status.value)

    def slip_outcome(self, outcome: str) -> None:
        """Sale recovery: a slip notified, or one whose purchase was paid or expired."""
        key = (outcome,)
        self._slips[key] = self._slips.get(key, 0) + 1

    def ingest_rejected(self, status: int) -> None:
        key = (str(status),)
        self._rejections[key] = self._rejections.get(key, 0) + 1

    def ingest_took(self, duration_s: float) -> None:
        self._ingest.observe((), duration_s)

    def attempt_made(self, channel: Channel, duration_s: float) -> None:
        self._attempts.observe((channel.value,), duration_s)

    def delivery_settled(self, channel: str | None, status: str) -> None:
        """Where a delivery went: delivered, failed, retrying, withheld, skipped, ignored."""
        key = (channel or NO_CHANNEL, status)
        self._deliveries[key] = self._deliveries.get(key, 0) + 1

    # -- a scrape --------------------------------------------------------------------

    async def exposition(
        self,
        read_gauges: Callable[[], Awaitable[QueueGauges]],
        accept: str,
        peers: Callable[[], Awaitable[tuple[list[bytes], int]]] | None = None,
    ) -> tuple[bytes, str]:
        """The body and content type for a scrape: the store's gauges read (or their last
        values, if the store does not answer in time), in the format `accept` asks for.

        With `peers` (a multi-process serve): every other process's counts are added to
        this one's, and `relay_metrics_processes` says how many answered.
        """
        snapshots: list[bytes] = []
        missing = None
        if peers is not None:
            (snapshots, missing), _ = await asyncio.gather(
                peers(), self._gauges.refresh(read_gauges)
            )
        else:
            await self._gauges.refresh(read_gauges)
        encode, content_type = choose_encoder(accept)
        self._peers, self._peers_missing = [], missing
        for raw in snapshots:
            try:
                self._peers.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                self._peers_missing = (self._peers_missing or 0) + 1
        try:
            return encode(self.registry), content_type
        finally:
            self._peers, self._peers_missing = [], None

    def close(self) -> None:
        """Cancel a store read still in flight: the store is closing."""
        self._gauges.cancel()

    def collect(self) -> Iterator[Metric]:
        """What `prometheus_client` renders: called by the registry during `exposition`."""
        counters, histograms, answered = self._summed()
        yield _counter(
            "relay_events",
            "Hotmart events answered 200, by producer, event and outcome.",
            ("producer", "event", "outcome"),
            counters["events"],
        )
        yield _counter(
            "relay_ingest_rejections",
            "Posts to the ingest path refused, by HTTP status: nothing was stored.",
            ("status",),
            counters["rejections"],
        )
        yield _counter(
            "relay_deliveries",
            "Deliveries as they settle, by channel and status; retrying: an attempt failed"
            " and another is scheduled.",
            ("channel", "status"),
            counters["deliveries"],
        )
        yield _counter(
            "relay_slips",
            "Sale recovery: slips notified to affiliates, and those whose purchase was then"
            " paid or expired (the first such event of the transaction).",
            ("outcome",),
            counters["slips"],
        )
        yield histograms["attempts"].family(
            "relay_attempt_duration_seconds",
            "How long each delivery attempt took, by channel.",
            ("channel",),
        )
        yield histograms["ingest"].family(
            "relay_ingest_duration_seconds",
            "How long ingest took to answer a post, refusals included.",
            (),
        )
        if self._peers_missing is not None:
            processes = GaugeMetricFamily(
                "relay_metrics_processes",
                "A multi-process serve: the other processes whose counts this scrape adds"
                " (answered), and those that did not answer in time (missing).",
                labels=("state",),
            )
            processes.add_metric(("answered",), answered)
            processes.add_metric(("missing",), self._peers_missing)
            yield processes
        yield from self._store_gauges()

    def _store_gauges(self) -> Iterator[Metric]:
        gauges, read_at_ms = self._gauges.last, self._gauges.read_at_ms
        now_ms = self._clock.now_ms()
        yield GaugeMetricFamily(
            "relay_store_gauges_age_seconds",
            "How old the store's gauges (queue depth, oldest pending age, destinations"
            " disabled) are: about 0 when read for this scrape, more while the store does not"
            " answer within the scrape's wait, +Inf before it ever has (they are absent then).",
            math.inf if read_at_ms is None else max(now_ms - read_at_ms, 0) / 1000,
        )
        if gauges is None:
            return  # never read yet: absent, not a made-up zero
        due_for_ms = 0 if gauges.earliest_due_at_ms is None else now_ms - gauges.earliest_due_at_ms
        yield GaugeMetricFamily(
            "relay_queue_depth", "Deliveries pending: due, in flight or scheduled.", gauges.pending
        )
        yield GaugeMetricFamily(
            "relay_oldest_pending_age_seconds",
            "How long the pending delivery due earliest has been due; 0 when none is.",
            max(due_for_ms, 0) / 1000,
        )
        yield GaugeMetricFamily(
            "relay_destinations_disabled",
            "Destinations disabled, by their failures or by an operator.",
            gauges.destinations_disabled,
        )


def _counter(name: str, doc: str, labelnames: Sequence[str], counts: Counts) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labelnames)
    for labels, value in sorted(counts.items()):
        family.add_metric(labels, value)
    return family
