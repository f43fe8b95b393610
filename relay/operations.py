"""What an operator can do to the outbox, as the CLI and the coming admin page share it.

Replays and tests are queued in the store, then delivered: when a server runs, it is
woken and sends them, so its log shows every attempt and its leases keep one attempt
in flight per delivery, while this waits, bounded, for the outcomes by reading the
store. Only when no server runs are they sent here, through the real channels, under
leases of their own that a server starting meanwhile leaves alone. A withheld row is
first decided again against the config in force (`relay.regrant`); what that makes
pending is sent the same way.

Nothing here prints: each operation returns what happened, and `relay.commands`
words it. Refusals are data (`Refused`), never an exit code.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from relay.clock import Clock, SystemClock
from relay.config import AffiliateConfig, Config, Destination
from relay.destination_ids import destination_key
from relay.engine import bounds_of, open_relay
from relay.instance import wake_server
from relay.outbox import decided_rows, new_event, send_test_rows
from relay.records import (
    DeliveryDetail,
    DeliveryRow,
    DestinationHealth,
    HistoryFilter,
    RegrantResult,
    Replacement,
    cli_lease_owner,
)
from relay.regrant import plan_regrant
from relay.samples import sample_slip_event
from relay.store import Store
from relay.store.backend import uses_postgres
from relay.targets import describe, find_destination

# How often a waiting operation reads the store while the server sends: quick enough to
# feel immediate, and a read in WAL mode never blocks the server's writes.
OUTCOME_POLL_S = 0.1
# Withheld rows decided again per store round trip: each carries its event's payload.
REGRANT_PAGE_ROWS = 200

OnSettled = Callable[[int], None]  # called with how many more deliveries have settled


@dataclass(frozen=True)
class Refused:
    """An operation that was not done, and why, in words an operator can act on."""

    reason: str


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPage:
    rows: list[DeliveryRow]
    store_empty: bool  # no rows at all, so an empty page is no filter's doing


async def history(store: Store, query: HistoryFilter) -> HistoryPage:
    rows = await store.history(query)
    # An empty answer to a filter says whether the filter or the store is empty.
    filtered = query != HistoryFilter(limit=query.limit)
    empty = not rows and (not filtered or not await store.history(HistoryFilter(limit=1)))
    return HistoryPage(rows, empty)


async def show(store: Store, delivery_id: int) -> DeliveryDetail | None:
    return await store.delivery(delivery_id)


# -- replay ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """What a replay or a test queued to send now, and what it did with the rest."""

    to_send: list[int]
    regranted: RegrantResult = field(default_factory=RegrantResult)
    in_flight: list[int] = field(default_factory=list)  # being sent right now: try later
    not_replayable: list[int] = field(default_factory=list)  # unknown, ignored, skipped...


async def queue_replay(
    config: Config,
    store: Store,
    *,
    ids: Sequence[int] = (),
    failed: bool = False,
    withheld: bool = False,
    since_ms: int | None = None,
    affiliate_code: str | None = None,
    clock: Clock | None = None,
) -> Queued:
    """Make these rows due now with a fresh schedule: `ids`, or every failed row, or
    every withheld one (decided again first), created since `since_ms`."""
    clock = clock or SystemClock()
    chosen = list(ids)
    if failed:
        chosen = await store.failed_since(since_ms)
    # Withheld rows are decided again, by the privacy gate, against the config in force.
    granted = await regrant(
        config,
        store,
        ids=None if withheld else list(ids),
        since_ms=since_ms if withheld else None,
        affiliate_code=affiliate_code,
        clock=clock,
    )
    decided = {old for old, _ in granted.replaced} | {i for i, _ in granted.withheld}
    rest = sorted(set(chosen) - decided - set(granted.pending))
    requeued = await store.requeue(rest, clock.now_ms()) if rest else []
    refused = sorted(set(rest) - set(requeued))
    in_flight = set(await store.leased(refused, clock.now_ms())) if refused else set()
    return Queued(
        to_send=sorted({*granted.pending, *requeued}),
        regranted=granted,
        in_flight=sorted(in_flight),
        not_replayable=[i for i in refused if i not in in_flight],
    )


async def regrant(
    config: Config,
    store: Store,
    *,
    ids: Sequence[int] | None,
    since_ms: int | None,
    affiliate_code: str | None,
    clock: Clock | None = None,
) -> RegrantResult:
    """Decide the chosen withheld rows again (`ids`, or every one created since), a page
    at a time; say what each became."""
    clock = clock or SystemClock()
    total = RegrantResult()
    before_id: int | None = None
    while ids is None or ids:
        rows = await store.withheld(
            ids=ids,
            since_ms=since_ms,
            affiliate_code=affiliate_code,
            before_id=before_id,
            limit=REGRANT_PAGE_ROWS,
        )
        if not rows:
            break
        regrants, redecided = plan_regrant(config, rows)
        replacements = [
            Replacement(r.delivery_ids, r.event_row_id, decided_rows(r.decisions, r.notice))
            for r in redecided
        ]
        result = await store.regrant(regrants, replacements, clock.now_ms())
        total.pending.extend(result.pending)
        total.withheld.extend(result.withheld)
        total.replaced.extend(result.replaced)
        before_id = rows[-1].id
    return total


# -- send-test -------------------------------------------------------------------------


async def queue_send_test(
    config: Config,
    store: Store,
    *,
    affiliate_code: str,
    producer_id: str | None = None,
    destination_id: str | None = None,
    clock: Clock | None = None,
) -> Queued | Refused:
    """Queue a notification marked as a test, with made-up buyer data, to each of the
    affiliate's destinations (or the one named); refused for an affiliate the relay
    sends nothing."""
    clock = clock or SystemClock()
    matches = [
        (p, a)
        for p in config.producers
        if producer_id in (None, p.id)
        for a in p.affiliates
        if a.code == affiliate_code
    ]
    if len(matches) != 1:
        found = "no" if not matches else "several"
        return Refused(f"{found} affiliate {affiliate_code} in the config; use --producer")
    producer, affiliate = matches[0]
    chosen = _test_destinations(affiliate, destination_id)
    if isinstance(chosen, Refused):
        return chosen
    now_ms = clock.now_ms()
    event = sample_slip_event(affiliate.code, affiliate.name, affiliate.locale, now_ms)
    rows = send_test_rows(producer.id, affiliate.code, chosen)
    result = await store.ingest(new_event(producer.id, event, rows), now_ms)
    return Queued(to_send=await store.delivery_ids_of_event(result.event_row_id))


def _test_destinations(
    affiliate: AffiliateConfig, destination_id: str | None
) -> tuple[Destination, ...] | Refused:
    if not affiliate.buyer_data:
        # The relay sends this affiliate nothing, so a test would show what never comes,
        # with buyer-like data the producer has not allowed them to see.
        return Refused(
            f"affiliate {affiliate.code} has buyer_data = false: the relay sends it nothing, "
            "so there is nothing to test; set buyer_data = true to send it slips"
        )
    if destination_id is None:
        if not affiliate.destinations:
            return Refused(f"affiliate {affiliate.code} has no destinations")
        return affiliate.destinations
    picked = affiliate.destination(destination_id)
    if picked is None:
        known = ", ".join(d.stable_id for d in affiliate.destinations) or "none"
        return Refused(
            f"affiliate {affiliate.code} has no destination {destination_id!r}; "
            f"its destination ids: {known}"
        )
    return (picked,)


# -- sending what was queued -----------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """One queued delivery as the store has it after `deliver_now`."""

    row: DeliveryRow
    waiting: bool  # the running server has not settled it yet: it sends it later


async def deliver_now(
    config: Config,
    store: Store,
    ids: list[int],
    *,
    on_settled: OnSettled | None = None,
    wait_s: float | None = None,
) -> list[Settled]:
    """Have the running server send `ids` and wait for it; with none running, send here.

    The wait is bounded by an attempt's lease (the longest one may take), or `wait_s`.
    """
    # On PostgreSQL no lock file says whether a server runs: the rows were queued with a
    # NOTIFY that wakes every instance, and this process sends too; leases keep each
    # row to one sender.
    shared = uses_postgres(config)
    db_path = config.resolve_path(config.storage.sqlite_path)
    waiting: set[int] = set()
    if not shared and wake_server(db_path):
        timeout_s = bounds_of(config).lease_s if wait_s is None else wait_s
        waiting = await _wait_for_outcomes(store, ids, timeout_s, on_settled)
    else:
        async with open_relay(config, store=store, owner=cli_lease_owner(os.getpid())) as relay:
            await relay.dispatcher.run_burst(only_ids=ids, on_done=on_settled)
        if not shared:  # a server started meanwhile, if any, takes over the retries left
            wake_server(db_path)
    settled = []
    for delivery_id in ids:
        detail = await store.delivery(delivery_id)
        if detail is not None:
            settled.append(Settled(detail.delivery, delivery_id in waiting))
    return settled


async def _wait_for_outcomes(
    store: Store, ids: Sequence[int], timeout_s: float, on_settled: OnSettled | None
) -> set[int]:
    """Read the store until the server has an outcome for every id, or `timeout_s`
    passes; return the ids still waiting."""
    waiting = set(ids)
    deadline = time.monotonic() + timeout_s
    while waiting:
        settled = set(await store.settled_since_replay(sorted(waiting)))
        if settled and on_settled is not None:
            on_settled(len(settled))
        waiting -= settled
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(OUTCOME_POLL_S)
    return waiting


# -- destinations ----------------------------------------------------------------------


@dataclass(frozen=True)
class DestinationState:
    """A destination of the config, with its health as the store has it."""

    key: str
    target: str  # "email ana@example.com", "webhook https://..."
    enabled: bool
    disabled_reason: str
    health: DestinationHealth | None


async def destinations(config: Config, store: Store) -> list[DestinationState]:
    health = await store.destination_health()
    states = []
    for producer in config.producers:
        for affiliate in producer.affiliates:
            for destination in affiliate.destinations:
                key = destination_key(producer.id, affiliate.code, destination.stable_id)
                h = health.get(key)
                states.append(
                    DestinationState(
                        key=key,
                        target=describe(destination),
                        enabled=destination.enabled and (h.enabled if h else True),
                        disabled_reason=(h.disabled_reason if h else "")
                        or ("" if destination.enabled else "enabled = false in config"),
                        health=h,
                    )
                )
    return states


async def set_destination_enabled(
    config: Config, store: Store, key: str, enabled: bool, *, clock: Clock | None = None
) -> Refused | None:
    """Enable or disable the destination `key` names; refused if the config has none."""
    if find_destination(config, key) is None:
        return Refused(
            f"no destination {key}; run `relay destinations` for the keys "
            "(producer/affiliate/id: a destination's id, not its position)"
        )
    reason = "" if enabled else "disabled by an operator"
    await store.set_destination_enabled(key, enabled, reason, (clock or SystemClock()).now_ms())
    return None
