"""`relay replay`, `relay send-test` and `relay destinations`: an operator's hands on the outbox.

Replays and tests are queued in the store. When a server runs, it is woken and sends
them, so its log shows every attempt and its leases keep one attempt in flight per
delivery; this process waits, bounded, for the outcomes by reading the store. Only
when no server runs does this process send them itself, through the real channels,
under leases of its own that a server starting meanwhile leaves alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from relay.commands.history import when
from relay.config import Config, destination_key
from relay.durations import parse_since_ms
from relay.ingest import new_message_id
from relay.runtime import SystemClock
from relay.samples import sample_slip_event
from relay.service import bounds_of, open_engine, open_store, wake_server
from relay.store import Store
from relay.store.records import (
    DeliveryKind,
    DeliveryStatus,
    NewDelivery,
    NewEvent,
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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class ProgressBar:
    """A one-line bar on stderr while deliveries settle, drawn only on a terminal.

    Elsewhere (a pipe, a log file) it writes one summary line at the end instead of
    carriage returns. While it is drawn, a log line first clears it (`beside_logs`), so
    the two never share a line; the next step draws it again.
    """

    def __init__(self, total: int, out: TextIO | None = None, width: int = 30) -> None:
        self.total, self.done, self._width = total, 0, width
        self._out = out or sys.stderr
        self._live = self._out.isatty()
        self._drawn = False

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._live:
            filled = self._width * min(self.done, self.total) // max(self.total, 1)
            bar = "#" * filled + "." * (self._width - filled)
            self._out.write(f"\r[{bar}] {self.done}/{self.total}")
            self._out.flush()
            self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._out.flush()
            self._drawn = False

    def finish(self) -> None:
        if self._live:
            if self._drawn:
                self._out.write("\n")
                self._drawn = False
        else:
            self._out.write(f"settled {self.done}/{self.total}\n")
        self._out.flush()

    @contextmanager
    def beside_logs(self) -> Iterator[None]:
        """While the block runs, every log handler clears the bar before it writes."""
        bar = self

        class _ClearBar(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                bar.clear()
                return True

        handlers = list(logging.getLogger().handlers)
        clear = _ClearBar()
        for handler in handlers:
            handler.addFilter(clear)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(clear)
            self.finish()


async def replay(config: Config, args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.failed):
        print("give delivery ids, or --failed [--since WHEN]", file=sys.stderr)
        return EXIT_USAGE
    async with open_store(config) as store:
        ids = list(args.ids)
        if args.failed:
            since_ms = parse_since_ms(args.since, _now_ms()) if args.since else None
            ids = await store.failed_since(since_ms)
        now_ms = _now_ms()
        requeued = await store.requeue(ids, now_ms)
        refused = sorted(set(ids) - set(requeued))
        in_flight = set(await store.leased(refused, now_ms)) if refused else set()
        for missing in refused:
            if missing in in_flight:
                print(f"delivery {missing} is being sent right now; try again in a moment")
            else:
                print(
                    f"delivery {missing}: not replayable (unknown, withheld, ignored or "
                    "skipped, or its buyer data was purged past storage.retention)"
                )
        if not requeued:
            return EXIT_FAILED if ids else EXIT_OK
        return await _send_now(config, store, requeued, ProgressBar(len(requeued)))


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
    indexes = range(len(affiliate.destinations))
    if args.destination is not None:
        if args.destination not in indexes:
            print(
                f"affiliate {affiliate.code} has no destination {args.destination}", file=sys.stderr
            )
            return EXIT_USAGE
        indexes = range(args.destination, args.destination + 1)
    now_ms = _now_ms()
    event = sample_slip_event(affiliate.code, affiliate.name, affiliate.locale, now_ms)
    deliveries = tuple(
        NewDelivery(
            status=DeliveryStatus.PENDING,
            reason="test notification (relay send-test)",
            message_id=new_message_id(),
            affiliate_code=affiliate.code,
            destination_key=destination_key(producer.id, affiliate.code, i),
            channel=affiliate.destinations[i].kind,
            kind=DeliveryKind.TEST,
        )
        for i in indexes
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
        failed += row.status != "delivered"
        print(f"delivery {row.id} -> {row.destination_key}: {row.status} {note}".rstrip())
    return EXIT_OK if failed == 0 else EXIT_FAILED


async def destinations(config: Config, args: argparse.Namespace) -> int:
    key = args.enable or args.disable
    async with open_store(config) as store:
        if key:
            if find_destination(config, key) is None:
                print(
                    f"no destination {key}; run `relay destinations` for the keys", file=sys.stderr
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
            for index, destination in enumerate(affiliate.destinations):
                k = destination_key(producer.id, affiliate.code, index)
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
