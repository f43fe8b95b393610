"""`relay replay`, `relay send-test` and `relay destinations`: an operator's hands on the outbox.

Replays and tests are queued in the store. When a server runs, it is woken and sends
them, so its log shows every attempt and its leases keep one attempt in flight per
delivery; this process waits, bounded, for the outcomes by reading the store. Only
when no server runs does this process send them itself, through the real channels,
under leases of its own that a server starting meanwhile leaves alone. A withheld row
is first decided again against the config in force (`relay.regrant`); what that makes
pending is sent the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence

from relay.commands.history import when
from relay.commands.progress import ProgressBar
from relay.config import Config
from relay.destination_ids import destination_key
from relay.durations import parse_since_ms
from relay.ingest import new_deliveries, new_message_id
from relay.regrant import plan_regrant
from relay.runtime import SystemClock
from relay.samples import sample_slip_event
from relay.service import bounds_of, open_engine, open_store, wake_server
from relay.store import Store
from relay.store.records import (
    DeliveryKind,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
    RegrantResult,
    Replacement,
    cli_lease_owner,
)
from relay.store.sqlite import SqliteStore
from relay.targets import describe, find_destination

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# How often the CLI reads the store while the server sends: quick enough to feel
# immediate, and a read in WAL mode never blocks the server's writes.
OUTCOME_POLL_S = 0.1
# Withheld rows decided again per store round trip: each carries its event's payload.
REGRANT_PAGE_ROWS = 200


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def replay(config: Config, args: argparse.Namespace) -> int:
    chosen = sum((bool(args.ids), args.failed, args.withheld))
    if chosen != 1 or (args.since and args.ids) or (args.affiliate and not args.withheld):
        print(
            "give delivery ids, --failed [--since WHEN] or --withheld [--since WHEN] "
            "[--affiliate CODE]",
            file=sys.stderr,
        )
        return EXIT_USAGE
    since_ms = parse_since_ms(args.since, _now_ms()) if args.since else None
    async with open_store(config) as store:
        ids: list[int] = list(args.ids)
        if args.failed:
            ids = await store.failed_since(since_ms)
        # Withheld rows are decided again, by the privacy gate, against the config in force.
        granted = await _regrant(
            config,
            store,
            ids=None if args.withheld else args.ids,
            since_ms=since_ms if args.withheld else None,
            affiliate_code=args.affiliate,
        )
        decided = {old for old, _ in granted.replaced} | {i for i, _ in granted.withheld}
        rest = sorted(set(ids) - decided - set(granted.pending))
        requeued = await store.requeue(rest, _now_ms()) if rest else []
        await _refusals(store, sorted(set(rest) - set(requeued)))
        to_send = sorted({*granted.pending, *requeued})
        if not to_send:
            refused = bool(ids) and not args.failed
            return EXIT_FAILED if refused else EXIT_OK
        return await _send_now(config, store, to_send, ProgressBar(len(to_send)))


async def _regrant(
    config: Config,
    store: SqliteStore,
    *,
    ids: Sequence[int] | None,
    since_ms: int | None,
    affiliate_code: str | None,
) -> RegrantResult:
    """Decide the chosen withheld rows again, a page at a time; say what each became."""
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
            Replacement(r.delivery_ids, r.event_row_id, new_deliveries(r.decisions))
            for r in redecided
        ]
        result = await store.regrant(regrants, replacements, _now_ms())
        total.pending.extend(result.pending)
        total.withheld.extend(result.withheld)
        total.replaced.extend(result.replaced)
        before_id = rows[-1].id
    for delivery_id, reason in total.withheld:
        print(f"delivery {delivery_id}: still withheld: {reason}")
    for old_id, new_ids in total.replaced:
        listed = ", ".join(str(i) for i in new_ids)
        print(f"delivery {old_id}: decided again, replaced by deliveries {listed}")
    return total


async def _refusals(store: Store, refused: list[int]) -> None:
    in_flight = set(await store.leased(refused, _now_ms())) if refused else set()
    for missing in refused:
        if missing in in_flight:
            print(f"delivery {missing} is being sent right now; try again in a moment")
        else:
            print(f"delivery {missing}: not replayable (unknown, ignored, skipped or superseded)")


async def send_test(config: Config, args: argparse.Namespace) -> int:
    matches = [
        (p, a)
        for p in config.producers
        if args.producer in (None, p.id)
        for a in p.affiliates
        if a.code == args.affiliate
    ]
    if len(matches) != 1:
        found = "no" if not matches else "several"
        print(f"{found} affiliate {args.affiliate} in the config; use --producer", file=sys.stderr)
        return EXIT_USAGE
    producer, affiliate = matches[0]
    if not affiliate.buyer_data:
        # The relay sends this affiliate nothing, so a test would show what never comes,
        # with buyer-like data the producer has not allowed them to see.
        print(
            f"affiliate {affiliate.code} has buyer_data = false: the relay sends it nothing, "
            "so there is nothing to test; set buyer_data = true to send it slips",
            file=sys.stderr,
        )
        return EXIT_USAGE
    chosen = affiliate.destinations
    if args.destination is not None:
        picked = affiliate.destination(args.destination)
        if picked is None:
            known = ", ".join(d.stable_id for d in affiliate.destinations) or "none"
            print(
                f"affiliate {affiliate.code} has no destination {args.destination!r}; "
                f"its destination ids: {known}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        chosen = (picked,)
    now_ms = _now_ms()
    event = sample_slip_event(affiliate.code, affiliate.name, affiliate.locale, now_ms)
    deliveries = tuple(
        NewDelivery(
            status=DeliveryStatus.PENDING,
            reason="test notification (relay send-test)",
            message_id=new_message_id(),
            affiliate_code=affiliate.code,
            destination_key=destination_key(producer.id, affiliate.code, d.stable_id),
            channel=d.kind,
            kind=DeliveryKind.TEST,
        )
        for d in chosen
    )
    if not deliveries:
        print(f"affiliate {affiliate.code} has no destinations", file=sys.stderr)
        return EXIT_USAGE
    new_event = NewEvent(
        producer_id=producer.id,
        hotmart_id=event.id,
        event_name=event.event,
        source="send-test",
        transaction_code=event.purchase.transaction,
        product_id=event.product.id,
        payload_json=event.model_dump_json(),
        deliveries=deliveries,
    )
    async with open_store(config) as store:
        result = await store.ingest(new_event, now_ms)
        ids = await store.delivery_ids_of_event(result.event_row_id)
        return await _send_now(config, store, ids, None)


async def _send_now(
    config: Config, store: SqliteStore, ids: list[int], progress: ProgressBar | None
) -> int:
    """Have the running server send `ids` and wait for it; with none running, send here."""
    if wake_server(config.resolve_path(config.storage.sqlite_path)):
        waiting = await _wait_for_outcomes(store, ids, bounds_of(config).lease_s, progress)
        if progress is not None:
            progress.finish()
        return await _report(store, ids, waiting)
    async with open_engine(
        config,
        store,
        clock=SystemClock(),
        wakeup=asyncio.Event(),
        owner=cli_lease_owner(os.getpid()),
    ) as dispatcher:
        if progress is None:
            await dispatcher.run_burst(only_ids=ids)
        else:
            with progress.beside_logs():
                await dispatcher.run_burst(only_ids=ids, on_done=progress.advance)
    # A server started meanwhile, if any, takes over the retries this left.
    wake_server(config.resolve_path(config.storage.sqlite_path))
    return await _report(store, ids, set())


async def _wait_for_outcomes(
    store: Store, ids: Sequence[int], timeout_s: float, progress: ProgressBar | None
) -> set[int]:
    """Read the store until the server has an outcome for every id, or `timeout_s` (an
    attempt's lease, the longest one may take) passes; return the ids still waiting."""
    waiting = set(ids)
    deadline = time.monotonic() + timeout_s
    while waiting:
        settled = set(await store.settled_since_replay(sorted(waiting)))
        if settled and progress is not None:
            progress.advance(len(settled))
        waiting -= settled
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(OUTCOME_POLL_S)
    return waiting


async def _report(store: Store, ids: list[int], waiting: set[int]) -> int:
    failed = 0
    for delivery_id in ids:
        detail = await store.delivery(delivery_id)
        if detail is None:
            continue
        row = detail.delivery
        note = row.last_error if row.status != "delivered" else ""
        if delivery_id in waiting:
            note = "queued: the running server sends it (see `relay show`)"
        elif row.status == "pending":
            note = f"retry at {when(row.next_attempt_at_ms)}: {row.last_error}"
        elif row.status in ("withheld", "skipped"):
            # The gate said no when it came to send: the sender's config, which a running
            # server read when it started, is not the one this command read.
            note = f"{row.reason} (a running relay reads its config when it starts)"
        failed += row.status != "delivered"
        print(f"delivery {row.id} -> {row.destination_key}: {row.status} {note}".rstrip())
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def destinations(config: Config, args: argparse.Namespace) -> int:
    key = args.enable or args.disable
    async with open_store(config) as store:
        if key:
            if find_destination(config, key) is None:
                print(
                    f"no destination {key}; run `relay destinations` for the keys "
                    "(producer/affiliate/id: a destination's id, not its position)",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            enable = bool(args.enable)
            reason = "" if enable else "disabled by an operator"
            await store.set_destination_enabled(key, enable, reason, _now_ms())
            print(f"{key}: {'enabled' if enable else 'disabled'}")
            return EXIT_OK
        health = await store.destination_health()
    rows = []
    for producer in config.producers:
        for affiliate in producer.affiliates:
            for destination in affiliate.destinations:
                k = destination_key(producer.id, affiliate.code, destination.stable_id)
                h = health.get(k)
                enabled = destination.enabled and (h.enabled if h else True)
                rows.append(
                    {
                        "key": k,
                        "target": describe(destination),
                        "enabled": enabled,
                        "disabled_reason": (h.disabled_reason if h else "")
                        or ("" if destination.enabled else "enabled = false in config"),
                        "consecutive_failures": h.consecutive_failures if h else 0,
                        "last_success": when(h.last_success_at_ms) if h else "-",
                        "last_error": h.last_error if h else "",
                        "last_error_at": when(h.last_error_at_ms) if h else "-",
                    }
                )
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        state = "enabled" if row["enabled"] else f"DISABLED ({row['disabled_reason']})"
        print(f"{row['key']}  {row['target']}  {state}")
        print(
            f"    failures in a row: {row['consecutive_failures']}  "
            f"last success: {row['last_success']}  "
            f"last error: {row['last_error_at']} {row['last_error'] or '-'}"
        )
    return EXIT_OK
