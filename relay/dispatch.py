"""Claim due deliveries and run them, bounded overall and per destination.

The loop waits on one event: ingest sets it after a commit, a finished attempt sets
it, stopping sets it; otherwise it sleeps until the next due retry. Claims are
leases, so a crash hands the rows back on restart (at-least-once). Modelled on
procrastinate's worker: stop flag, bounded concurrency, shielded outcome writes.

Per destination, the cap on attempts in flight adapts (relay.adaptive_caps): the
configured floor, raised while the receiver answers fast and healthy; the claim shares
free slots fairly, so a raised cap only takes slots no other destination waits for.

At most one attempt of a delivery is in flight at any moment: a row this dispatcher
has in flight is never claimed again (its id is excluded from every claim, even
past its lease), a lease outlasts the attempt that holds it, and an outcome write
counts only while its lease token is the row's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from relay.adaptive_caps import AdaptiveCaps
from relay.attempt import AttemptRunner
from relay.clock import Clock, Sleeper, wait_for_event
from relay.config import DeliveryConfig
from relay.metrics import Metrics
from relay.records import SERVE_LEASE_OWNER, ClaimedDelivery, DeliveryStatus
from relay.store import Store, StoreUnavailable

log = logging.getLogger("relay.dispatch")

STORE_RETRY_MIN_S = 0.1  # after a store error, first retry soon (a lock is usually brief)...
STORE_RETRY_MAX_S = 10.0  # ...then back off so a broken disk is not hammered
# Due but not claimable with nothing in flight: only a race with another process's claim.
UNCLAIMABLE_RECHECK_S = 0.05
# A burst (a CLI replay with no server running) waits for a retry due this soon, so a
# receiver's brief hiccup or a Retry-After of seconds is ridden out; one due later is
# left to the server's dispatcher.
BURST_RETRY_HORIZON_S = 5.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        runner: AttemptRunner,
        delivery: DeliveryConfig,
        clock: Clock,
        wakeup: asyncio.Event,
        *,
        lease_s: float,
        owner: str = SERVE_LEASE_OWNER,
        sleeper: Sleeper = wait_for_event,
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._runner = runner
        self._delivery = delivery
        self._clock = clock
        self._wakeup = wakeup
        self._lease_s = lease_s  # from AttemptBounds: longer than any attempt holding it
        self._owner = owner
        self._sleeper = sleeper  # waits on `wakeup`; a unit test's never waits real time
        self._metrics = metrics or Metrics(clock)
        self._stopping = False
        self._leases_released = False
        self._in_flight: dict[int, asyncio.Task[DeliveryStatus | None]] = {}
        self._in_flight_by_key: Counter[str] = Counter()
        self.caps = AdaptiveCaps(
            delivery.per_destination_concurrency, delivery.per_destination_max_concurrency, clock
        )

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> None:
        """Serve until `stop()`: claim what fits, then sleep until there is a reason to look.

        One store round trip per wake-up both claims and learns when the next retry is
        due; a finishing attempt, a commit in ingest or that due time wakes us. Attempts
        in flight outlive this loop: if it fails and is restarted, they go on.
        """
        backoff_s = STORE_RETRY_MIN_S
        while not self._stopping:
            self._wakeup.clear()
            try:
                if not self._leases_released:
                    # Once per process, not per restart of this loop: our own attempts
                    # in flight must keep their leases.
                    await self._store.release_leases(self._owner)
                    self._leases_released = True
                _, next_due_ms = await self._claim_and_start(only_ids=None)
                backoff_s = STORE_RETRY_MIN_S
            except StoreUnavailable as exc:
                # A locked or failing store must not kill the dispatcher: wait, then retry.
                log.error("dispatcher cannot reach the store (%s); retry in %.1fs", exc, backoff_s)
                await self._sleep(backoff_s)
                backoff_s = min(backoff_s * 2, STORE_RETRY_MAX_S)
                continue
            if not self._stopping:
                await self._sleep(self._idle_timeout_s(next_due_ms))

    async def run_burst(
        self,
        only_ids: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> None:
        """Attempt what is due now (or just `only_ids`) until nothing is due or in flight.

        How the CLI replays and sends tests when no server runs. A retry due within
        BURST_RETRY_HORIZON_S is waited for and made; one scheduled later is left to
        the server. `on_done(1)` is called as each delivery settles.
        """
        while True:
            self._wakeup.clear()  # so the wait for a due retry below really waits
            started, next_due_ms = await self._claim_and_start(only_ids=only_ids)
            if not started and not self._in_flight:
                wait_s = None if next_due_ms is None else self._until_due_s(next_due_ms)
                if wait_s is None or wait_s > BURST_RETRY_HORIZON_S:
                    return
                await self._sleep(max(wait_s, 0.0))
                continue
            done, _ = await asyncio.wait(
                list(self._in_flight.values()), return_when=asyncio.FIRST_COMPLETED
            )
            if on_done is not None:
                settled = sum(1 for task in done if _settled(task))
                if settled:
                    on_done(settled)

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def drain(self, grace_s: float) -> None:
        """Stop claiming, give attempts in flight `grace_s`, then cancel the rest.

        A cancelled attempt keeps its lease; the next start releases it and sends again
        with the same message id, which is what at-least-once promises.
        """
        self.stop()
        tasks = list(self._in_flight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if pending:
            log.warning("stopped %d attempts in flight; they resume on restart", len(pending))

    async def _claim_and_start(self, only_ids: Sequence[int] | None) -> tuple[int, int | None]:
        """Claim and start what fits; return how many started, and when the next pending
        row not leased falls due."""
        free = self._delivery.concurrency - len(self._in_flight)
        if free <= 0:
            return 0, None  # a finishing attempt wakes us
        now_ms = self._clock.now_ms()
        claim = await self._store.claim_due(
            now_ms,
            now_ms + int(self._lease_s * 1000),
            free,
            self._delivery.per_destination_concurrency,
            exclude_ids=list(self._in_flight),
            only_ids=only_ids,
            owner=self._owner,
            caps=self.caps.raised(),
        )
        for unreadable in claim.unreadable:
            log.error("delivery %d failed without an attempt: %s", unreadable.id, unreadable.reason)
            self._metrics.delivery_settled(None, DeliveryStatus.FAILED.value)  # channel unknown
        for channel in claim.skipped:
            self._metrics.delivery_settled(channel, DeliveryStatus.SKIPPED.value)
        if self._stopping and claim.deliveries:
            # drain() began while this claim was in the store, and it waits only for what
            # was in flight then: an attempt started now could reach the receiver and be
            # cut off unrecorded, so a restart would send it twice. Start nothing; the
            # rows stay leased to us and the next start hands them back, never sent.
            log.info(
                "stopping: %d claimed deliveries left for the next start", len(claim.deliveries)
            )
            return 0, claim.next_due_at_ms
        for delivery in claim.deliveries:
            self._start(delivery)
        return len(claim.deliveries), claim.next_due_at_ms

    def _start(self, delivery: ClaimedDelivery) -> None:
        if delivery.id in self._in_flight:  # the store excludes these; never start a second
            log.error("delivery %d was claimed while in flight; not started again", delivery.id)
            return
        task = asyncio.create_task(self._runner.attempt(delivery), name=f"delivery-{delivery.id}")
        self._in_flight[delivery.id] = task
        key = delivery.destination_key
        self._in_flight_by_key[key] += 1
        started_ms = self._clock.now_ms()

        def finished(task: asyncio.Task[DeliveryStatus | None]) -> None:
            self._in_flight.pop(delivery.id, None)
            self._adapt(key, task, self._clock.now_ms() - started_ms)
            if not task.cancelled() and task.exception() is not None:
                # The type only: the text could quote buyer data. The lease brings it back.
                error = type(task.exception()).__name__
                log.error("delivery %d: attempt not recorded (%s)", delivery.id, error)
            self._wakeup.set()  # a slot is free

        task.add_done_callback(finished)

    def _adapt(self, key: str, task: asyncio.Task[DeliveryStatus | None], took_ms: int) -> None:
        """Tell the destination's cap how its receiver answered (relay.adaptive_caps)."""
        in_flight = self._in_flight_by_key[key]  # this attempt included
        self._in_flight_by_key[key] -= 1
        if self._in_flight_by_key[key] <= 0:
            del self._in_flight_by_key[key]
        if task.cancelled() or task.exception() is not None:
            return  # not the receiver's doing
        status = task.result()
        if status == DeliveryStatus.DELIVERED:
            self.caps.succeeded(key, took_ms, in_flight)
        elif status in (DeliveryStatus.PENDING, DeliveryStatus.FAILED):
            self.caps.failed(key)  # an error, a timeout, a 429: a retry or a give-up

    def _until_due_s(self, due_ms: int) -> float:
        return (due_ms - self._clock.now_ms()) / 1000

    def _idle_timeout_s(self, next_due_ms: int | None) -> float | None:
        """How long to sleep when no wake-up comes; None: until one does.

        There is no polling tick: ingest, a finishing attempt, `stop()` and (from other
        processes, such as a CLI replay) SIGUSR1 are what wake the dispatcher.
        """
        if next_due_ms is None:
            return None
        until_due_s = self._until_due_s(next_due_ms)
        if until_due_s > 0:
            return until_due_s
        if self._in_flight:
            return None  # due rows wait for a slot (or are ours): a finishing attempt wakes us
        return UNCLAIMABLE_RECHECK_S

    async def _sleep(self, timeout_s: float | None) -> None:
        await self._sleeper(self._wakeup, timeout_s)


def _settled(task: asyncio.Task[DeliveryStatus | None]) -> bool:
    """The attempt left its delivery in a final state (not waiting for a retry)."""
    if task.cancelled() or task.exception() is not None:
        return False
    return task.result() not in (None, DeliveryStatus.PENDING)
